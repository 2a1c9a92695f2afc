"""The relative attention Transformer-XL and XLNet share: the shift against its definition, the
memory update, no gradient through the memory, and (causal, Transformer-XL's use) a segment run
with the previous one as memory equal to the end of both run at once, clamp included."""

import pytest
import torch

from muppets.errors import ConfigError
from muppets.models.relative_attention import (
    relative_distances,
    relative_scores,
    shift_consecutive,
    shift_gathered,
    update_memory,
)
from muppets.models.xlnet import XLNetConfig, XLNetLMHeadModel, XLNetModel

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distances_and_both_shifts_read_distance_m_plus_i_minus_j():
    Q, M = 3, 2
    K = M + Q
    for causal in (False, True):
        d = relative_distances(Q, K, clamp_len=0, causal=causal)
        assert d.tolist() == list(range(K, (0 if causal else 1 - Q) - 1, -1))
        raw = d.expand(1, 1, Q, -1).contiguous()  # every score = the distance it stands for
        got = shift_consecutive(raw, K)[0, 0]
        want = torch.tensor([[M + i - j for j in range(K)] for i in range(Q)]).float()
        visible = want >= 0 if causal else torch.ones_like(want, dtype=torch.bool)
        assert torch.equal(got[visible], want[visible])
        rows = shift_gathered(raw[:, :, :2], torch.tensor([[2, 0]]), Q, K)[0, 0]
        assert torch.equal(rows[visible[[2, 0]]], want[[2, 0]][visible[[2, 0]]])
    clamped = relative_distances(3, 5, clamp_len=1, causal=False)
    assert clamped.tolist() == [1, 1, 1, 1, 1, 0, -1, -1]
    assert relative_distances(2, 3, 0, False, backward=True).tolist() == [-3, -2, -1, 0, 1]


def test_memory_keeps_the_last_mem_len_of_the_reused_part_detached():
    x = torch.arange(2 * 5 * 1.0).view(1, 5, 2).requires_grad_()
    memory = torch.full((1, 3, 2), -1.0)
    new = update_memory(memory, x * 2, mem_len=4, reuse_len=3)  # [-1 x3, x0..x2] -> last 4
    assert new.requires_grad is False and new.grad_fn is None
    assert new[0, :, 0].tolist() == [-1.0, 0.0, 4.0, 8.0]
    assert update_memory(None, x, mem_len=None).shape == (1, 5, 2)
    assert update_memory(None, x, mem_len=0).shape == (1, 0, 2)


def causal_model(**extra):
    torch.manual_seed(0)
    config = XLNetConfig(
        vocab_size=40, d_model=32, n_layer=2, n_head=4, d_inner=48, attn_type="uni", **extra
    )
    return XLNetModel(config).eval()


@pytest.mark.parametrize("clamp_len", [0, 4])
def test_a_segment_with_memory_is_the_end_of_both_segments_at_once(clamp_len):
    model = causal_model(mem_len=6, clamp_len=clamp_len)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model.run(ids).hidden
        first = model.run(ids[:, :6], use_mems=True)
        second = model.run(ids[:, 6:], mems=first.mems, use_mems=True)
    torch.testing.assert_close(first.hidden, whole[:, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(second.hidden, whole[:, 6:], atol=1e-5, rtol=0)
    # the next memory is the second segment's layer inputs: its first layer's is the embedding
    torch.testing.assert_close(second.mems[0], model.word_embeddings(ids[:, 6:]))


def test_no_gradient_reaches_the_previous_segment():
    """Training with memory (section 3.2): the loss of segment 2 gives segment 1's tokens, seen
    only through the memory, no gradient; the memory still changes the result."""
    model = causal_model(mem_len=5).train()
    model.dropout.p = 0.0
    for layer in model.layers:
        layer.attention.dropout.p = layer.dropout.p = layer.feed_forward.dropout.p = 0.0
    first_ids = torch.arange(0, 5).expand(2, -1)  # tokens 0..4 only in segment 1
    second_ids = torch.arange(20, 26).expand(2, -1)
    mems = model.run(first_ids, use_mems=True).mems
    assert all(m.grad_fn is None and not m.requires_grad for m in mems)
    out = model.run(second_ids, mems=mems).hidden
    out.pow(2).sum().backward()
    grad = model.word_embeddings.weight.grad
    assert grad[:5].abs().sum() == 0 and grad[20:26].abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(model.run(second_ids).hidden, out)


@pytest.mark.parametrize(
    "field, value",
    [("mem_len", -1), ("clamp_len", -2), ("reuse_len", -1), ("attn_type", "both"), ("n_head", 5)],
)
def test_impossible_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"config field {field}="):
        XLNetConfig(**{"d_model": 32, "n_head": 4, field: value})


def test_a_two_stream_step_reaches_every_parameter():
    """perm_mask, target_mapping, segments and memory together: each weight gets a gradient
    (the last layer's content stream gives only keys and values, and still reaches q, k, v)."""
    torch.manual_seed(0)
    config = XLNetConfig(vocab_size=40, d_model=32, n_layer=2, n_head=4, d_inner=48, dropout=0.0)
    model = XLNetLMHeadModel(config)
    ids = torch.randint(0, 40, (2, 6))
    mapping = torch.zeros(2, 2, 6)
    mapping[:, 0, 2] = mapping[:, 1, 4] = 1.0
    perm_mask = torch.zeros(2, 6, 6)
    perm_mask[:, :, [2, 4]] = 1.0  # the targets are hidden from everyone's content
    mems = [torch.randn(2, 3, 32) for _ in range(2)]
    segments = torch.tensor([[0, 0, 0, 1, 1, 2]] * 2)
    out = model(ids, None, segments, mems, perm_mask, mapping)
    out.logits.logsumexp(-1).sum().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []


def test_both_streams_in_one_pass_equal_each_stream_alone():
    """relative_scores over [segment rows; query-stream rows] (consecutive, then gathered at
    their positions) equals the two computed apart, with segments and masks; and the segment
    term's dropped "same" part changes no probability."""
    g = torch.Generator().manual_seed(0)
    B, N, T, P, M, D = 2, 3, 5, 2, 3, 4
    K = M + T
    q = torch.randn(B, N, T + P, D, generator=g)
    k = torch.randn(B, N, K, D, generator=g)
    k_r = torch.randn(1, N, K + T, D, generator=g)
    u, v, s_bias = (torch.randn(N, D, generator=g) for _ in range(3))
    seg_embed = torch.randn(2, N, D, generator=g)
    positions = torch.tensor([[4, 0], [2, 3]])
    different = (torch.rand(B, 1, T + P, K, generator=g) > 0.5).float()
    mask = torch.where(torch.rand(B, 1, T + P, K, generator=g) > 0.7, -1e30, 0.0)
    both = relative_scores(
        q, k, k_r, u, v, T, positions, (s_bias, seg_embed, different), mask, consecutive=T
    )
    rows = slice(None, T), slice(T, None)
    alone = [
        relative_scores(q[:, :, r], k, k_r, u, v, T, p, (s_bias, seg_embed, different[:, :, r]), m)
        for r, p, m in zip(rows, (None, positions), (mask[:, :, :T], mask[:, :, T:]), strict=True)
    ]
    torch.testing.assert_close(both, torch.cat(alone, dim=2), atol=1e-6, rtol=0)
    # the full segment term (q + b) . s_ij, "same" part included, as the reference adds it
    e = (q + s_bias[:, None]) @ seg_embed.permute(1, 2, 0)[None]  # (B, N, Q, 2)
    full = e[..., :1] + (e[..., 1:] - e[..., :1]) * different
    with_same = relative_scores(q, k, k_r, u, v, T, positions, None, mask, consecutive=T)
    with_same = with_same + full * D**-0.5
    torch.testing.assert_close(both.softmax(-1), with_same.softmax(-1), atol=1e-6, rtol=0)


def test_the_consecutive_shift_of_the_leading_rows_of_a_taller_table():
    Q, P, K = 3, 2, 4
    raw = torch.arange(2 * (Q + P) * (K + Q) * 1.0).view(1, 2, Q + P, K + Q)
    got = shift_consecutive(raw, K, Q)
    want = torch.stack([raw[:, :, i, Q - i : Q - i + K] for i in range(Q)], dim=2)
    assert torch.equal(got, want)


def test_memory_all_from_the_input_is_a_view_of_its_tail():
    x = torch.arange(2 * 6 * 1.0).view(1, 6, 2)
    new = update_memory(torch.zeros(1, 4, 2), x, mem_len=3)
    assert torch.equal(new, x[:, 3:]) and new.data_ptr() == x[:, 3:].data_ptr()
    reused = update_memory(torch.zeros(1, 4, 2), x, mem_len=2, reuse_len=4)
    assert torch.equal(reused, x[:, 2:4])
