"""Transformer-XL: the model against a plain PyTorch transcription of the reference (kimiyoung/
transformer-xl mem_transformer.py, attn_type 0), memories (no gradient; a segment with memory ==
the end of the segments at once), the causal mask, per-word perplexity, bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from muppets.data.lm_streams import ArrayStream, OrderedSegments
from muppets.data.wikitext import WikiTextStream
from muppets.errors import ConfigError
from muppets.models.registry import LM_PRESETS, lm_config
from muppets.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel
from muppets.recipes.evaluate_lm import perplexities, stream_nll

V = 50


def tiny(**overrides) -> TransfoXLLMHeadModel:
    values = dict(vocab_size=V, d_model=16, n_layer=2, n_head=2, d_head=8, d_inner=24)
    values.update(dropout=0.0, tgt_len=5, mem_len=5)
    torch.manual_seed(0)
    model = TransfoXLLMHeadModel(TransfoXLConfig(**{**values, **overrides}))
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name or name == "bias":
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def ids(*shape, seed=1) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------- the reference, transcribed plainly (T, B, ...)


def rel_shift(x):
    """mem_transformer.py _rel_shift: (Q, K, B, N) with a zero column padded and re-viewed."""
    zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]), dtype=x.dtype)
    x_padded = torch.cat([zero_pad, x], dim=1).view(x.size(1) + 1, x.size(0), *x.size()[2:])
    return x_padded[1:].view_as(x)


def reference_forward(model, input_ids, mems):
    """MemTransformerLM._forward and RelPartialLearnableDecoderLayer (post/pre-LN), our weights."""
    c = model.config
    x = input_ids.t()  # (T, B)
    qlen, bsz = x.shape
    mlen = mems[0].size(1) if mems is not None else 0
    klen = mlen + qlen
    word_emb = model.word_embeddings(x) * c.d_model**0.5
    all_ones = torch.ones(qlen, klen)
    mask = torch.triu(all_ones, diagonal=1 + mlen).bool()
    if c.same_length:
        mask_len = klen - c.mem_len
        shift = qlen - mask_len if mask_len > 0 else qlen
        mask = (torch.triu(all_ones, 1 + mlen) + torch.tril(all_ones, -shift)).bool()
    pos_seq = torch.arange(klen - 1, -1, -1.0)
    if c.clamp_len > 0:
        pos_seq.clamp_(max=c.clamp_len)
    inv_freq = 1 / (10000 ** (torch.arange(0.0, c.d_model, 2.0) / c.d_model))
    sinusoid = torch.ger(pos_seq, inv_freq)
    pos_emb = torch.cat([sinusoid.sin(), sinusoid.cos()], dim=-1)  # (K, H)
    h, hids = word_emb, []
    for i, layer in enumerate(model.layers):
        hids.append(h)
        a = layer.attention
        N, D, H = a.n_head, a.d_head, c.d_model
        mem = mems[i].transpose(0, 1) if mems is not None else None  # (M, B, H)
        cat = h if mem is None else torch.cat([mem, h], 0)
        if c.pre_lnorm:
            cat = layer.attention_norm(cat)
        w_heads = torch.cat(
            [cat @ a.q.view(H, -1), cat @ a.k.view(H, -1), cat @ a.v.view(H, -1)], -1
        )
        w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)
        w_head_q = w_head_q[-qlen:].view(qlen, bsz, N, D)
        w_head_k, w_head_v = w_head_k.view(klen, bsz, N, D), w_head_v.view(klen, bsz, N, D)
        r_head_k = (pos_emb @ a.r.view(H, -1)).view(klen, N, D)
        AC = torch.einsum("ibnd,jbnd->ijbn", (w_head_q + a.r_w_bias, w_head_k))
        BD = rel_shift(torch.einsum("ibnd,jnd->ijbn", (w_head_q + a.r_r_bias, r_head_k)))
        score = (AC + BD) * (1 / D**0.5)
        score = score.masked_fill(mask[:, :, None, None], -float("inf"))
        prob = F.softmax(score, dim=1)
        vec = torch.einsum("ijbn,jbnd->ibnd", (prob, w_head_v)).reshape(qlen, bsz, N * D)
        attn_out = vec @ a.o.view(H, N * D).t()
        if c.pre_lnorm:
            out = h + attn_out
            core = layer.feed_forward.down(
                F.relu(layer.feed_forward.up(layer.feed_forward_norm(out)))
            )
            h = out + core
        else:
            out = layer.attention_norm(h + attn_out)
            h = layer.feed_forward_norm(
                out + layer.feed_forward.down(F.relu(layer.feed_forward.up(out)))
            )
    logits = h @ model.word_embeddings.weight.t() + model.bias
    new_mems = []
    for i in range(c.n_layer):  # _update_mems with ext_len 0
        cat = hids[i] if mems is None else torch.cat([mems[i].transpose(0, 1), hids[i]], 0)
        new_mems.append(cat[max(0, klen - c.mem_len) :].transpose(0, 1))
    return logits.transpose(0, 1), new_mems


@pytest.mark.parametrize(
    "options",
    [{}, {"pre_lnorm": True}, {"clamp_len": 3}, {"same_length": True}, {"mem_len": 3}],
    ids=["post-ln", "pre-ln", "clamp", "same-length", "short-memory"],
)
def test_logits_and_memories_equal_the_reference(options):
    model = tiny(**options)
    mems = ref_mems = None
    with torch.no_grad():
        for seed in (1, 2, 3):  # three segments: no memory, then memories carried
            x = ids(3, 5, seed=seed)
            out = model(x, mems)
            want, ref_mems = reference_forward(model, x, ref_mems)
            torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=0)
            for ours, theirs in zip(out.mems, ref_mems, strict=True):
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
            mems = out.mems


# ------------------------------------------------------------------------------ memories


def test_memory_carries_no_gradient():
    model = tiny(dropout=0.0).train()
    first = model(ids(2, 5, seed=1))
    assert all(not m.requires_grad and m.grad_fn is None for m in first.mems)
    x, y = ids(2, 5, seed=2), ids(2, 5, seed=3)
    model(x, first.mems, y).nll.sum().backward()
    carried = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    constants = [m.clone() for m in first.mems]  # the same numbers, made outside any graph
    model(x, constants, y).nll.sum().backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(carried, model.parameters(), strict=True))


@pytest.mark.parametrize("clamp_len", [0, 3])
def test_segment_with_memory_equals_the_end_of_the_segments_at_once(clamp_len):
    model = tiny(mem_len=6, tgt_len=6, clamp_len=clamp_len)
    a, b = ids(2, 6, seed=1), ids(2, 4, seed=2)
    with torch.no_grad():
        carried = model(b, model(a).mems).logits
        at_once = model(torch.cat([a, b], 1)).logits[:, 6:]
    torch.testing.assert_close(carried, at_once, atol=1e-5, rtol=0)


@pytest.mark.parametrize("same_length", [False, True])
def test_a_logit_never_depends_on_a_later_token(same_length):
    model = tiny(same_length=same_length)
    with torch.no_grad():
        mems = model(ids(2, 5, seed=1)).mems
        x = ids(2, 5, seed=2)
        base = model(x, mems).logits
        for p in range(5):
            changed = x.clone()
            changed[:, p] = (changed[:, p] + 1) % V
            out = model(changed, mems).logits
            assert torch.equal(out[:, :p], base[:, :p])  # exactly: masked keys weigh 0
            assert (out[:, p:] - base[:, p:]).abs().amax(-1).min() > 1e-4  # it sees the token


# ------------------------------------------------------------------------------ perplexity


def test_per_word_perplexity_on_a_hand_built_stream():
    # 9 tokens: words [0, 1] [2] [3, 4] [eos 5] [6] [7, 8]; one row, so tokens 1 .. 8 predicted
    starts = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    text = WikiTextStream(ArrayStream(np.arange(9)), starts, words=6, dropped_words=0)
    nll = np.array([0.0, 0.5, 1.0, 2.0, 0.25, 0.75, 1.5, 3.0, 0.5])
    seen = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    got = perplexities(text, nll, seen)
    assert got["pieces"] == 8 and got["words"] == 5  # the first word's start is not predicted
    assert got["ppl_piece"] == pytest.approx(math.exp(9.5 / 8))
    assert got["ppl_word"] == pytest.approx(math.exp(9.5 / 5))


def test_stream_nll_is_each_token_once_and_matches_a_direct_run():
    model = tiny(mem_len=4, tgt_len=4)
    stream = ArrayStream(ids(1, 23, seed=5)[0].numpy())
    segments = OrderedSegments(stream, batch_size=2, tgt_len=4)  # rows of 11 tokens, 3 segments
    nll, seen = stream_nll(model, segments)
    assert seen.tolist() == segments.predicted().tolist()
    with torch.no_grad():  # row 1 in one piece: memory 4 >= what each segment looks back at
        row = torch.as_tensor(stream.ids[11:22])[None]
        logits = model(row[:, :4]).logits
        mems = model(row[:, :4]).mems
        logits = torch.cat([logits, model(row[:, 4:8], mems).logits], 1)
    want = -logits.log_softmax(-1)[0, :-1].gather(-1, row[0, 1:8, None])[:, 0]
    np.testing.assert_allclose(nll[12:19], want.double().numpy(), atol=1e-5)


# ------------------------------------------------------------------------------ presets, input


def test_presets_have_the_papers_base_shape():
    base = lm_config("transfo-xl-wt103-base")
    shape = (base.n_layer, base.d_model, base.n_head, base.d_head, base.d_inner)
    assert shape == (16, 410, 10, 41, 2100) and (base.tgt_len, base.mem_len) == (150, 150)
    assert lm_config("transfo-xl-tiny-norec").mem_len == 0
    assert {n.removesuffix("-norec") for n in LM_PRESETS} == {
        "transfo-xl-tiny",
        "transfo-xl-mini",
        "transfo-xl-wt103-base",
    }


@pytest.mark.parametrize("field", ["mem_len", "clamp_len"])
def test_negative_lengths_name_the_field(field):
    with pytest.raises(ConfigError, match=f"{field}=-1"):
        lm_config("transfo-xl-tiny", **{field: -1})


def test_the_training_loss_is_the_sum_of_the_per_token_nll_and_has_its_gradient():
    model = tiny(dropout=0.0).train()
    x, y = ids(3, 5, seed=1), ids(3, 5, seed=2)
    y[0, :2] = -100  # not predicted
    plain = model(x, labels=y).nll.sum()
    plain.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    summed = model(x, labels=y, return_logits=False, sum_only=True).loss  # lm_softmax's blocks
    summed.backward()
    torch.testing.assert_close(summed, plain, atol=1e-5, rtol=0)
    for a, p in zip(want, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-5)
    assert model.word_embeddings.weight.grad.layout == torch.strided  # sparse rows added in
    y[0, :2] = ids(1, 2, seed=3)  # every token predicted: the rows are taken as they are
    everything = model(x, labels=y, return_logits=False, sum_only=True).loss
    torch.testing.assert_close(everything, model(x, labels=y).nll.sum(), atol=1e-5, rtol=0)


def test_position_tables_are_built_once_per_shape():
    from muppets.models.relative_attention import relative_distances, sinusoid_encoding
    from muppets.models.transfo_xl import causal_mask_bias, position_tables

    cpu = torch.device("cpu")
    encoding, mask = position_tables(5, 3, 5, True, 2, 16, cpu, torch.float32)
    again = position_tables(5, 3, 5, True, 2, 16, cpu, torch.float32)
    assert again[0] is encoding and again[1] is mask  # cached, not rebuilt
    assert torch.equal(mask, causal_mask_bias(5, 3, 5, True))
    want = sinusoid_encoding(relative_distances(5, 8, 2, causal=True)[None], 16)
    assert torch.equal(encoding, want)
