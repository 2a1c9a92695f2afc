"""ElmoBiLM: config, directionality, padding, the loss by hand, clipping, parameter count."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from muppets.errors import ConfigError
from muppets.models.elmo import (
    IGNORE,
    PRESETS,
    ElmoBiLM,
    ElmoConfig,
    ProjectedLstm,
    reverse_within_lengths,
    sentence_targets,
)

P = PRESETS["elmo-tiny"]["projection_dim"]


def tiny(**overrides) -> ElmoBiLM:
    torch.manual_seed(0)
    return ElmoBiLM(ElmoConfig(**{**PRESETS["elmo-tiny"], **overrides})).eval()


def chars(B: int, T: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 262, (B, T, 50), generator=g)  # (B, T, C), no padding


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("cell_dim", 2.5),
        ("n_highway", -1),
        ("filters", [[1, 4], [0, 4]]),
        ("filters", [[51, 4]]),
        ("filters", []),
        ("activation", "gelu"),
        ("projection_dim", 16),  # not below cell_dim=16
        ("cell_clip", 0),
        ("dropout", 1.0),
        ("adaptive_softmax_cutoffs", [30, 20]),
        ("adaptive_softmax_cutoffs", [50]),
        ("adaptive_softmax_cutoffs", [10, 20]),  # projection_dim 8 < 4 ** 2
        ("model_type", "bert"),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"config field {field}="):
        ElmoConfig(**{**PRESETS["elmo-tiny"], field: value})


def test_config_round_trip_and_presets():
    for values in PRESETS.values():
        config = ElmoConfig(**values)
        assert ElmoConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    original = ElmoConfig(**PRESETS["elmo-original"])
    assert sum(n for _, n in original.filters) == 2048 and original.hidden_size == 1024
    assert (original.cell_dim, original.projection_dim, original.num_layers) == (4096, 512, 2)


def test_original_has_the_released_parameter_count():
    # AllenNLP lists the original ELMo at 93.6M parameters (without the softmax): bilm-tf's
    # 93,600,864 plus torch's second LSTM bias, 4 x 4 x 4096.
    with torch.device("meta"):
        model = ElmoBiLM(ElmoConfig(**PRESETS["elmo-original"]))
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("softmax"))
    assert n == 93_600_864 + 4 * 4 * 4096


def test_reverse_within_lengths_and_sentence_targets():
    x = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    assert reverse_within_lengths(x, torch.tensor([4, 2])).tolist() == [[4, 3, 2, 1], [6, 5, 0, 0]]
    mask = x.ne(0)
    forward_targets, backward_targets = sentence_targets(x, mask)
    assert forward_targets.tolist() == [[2, 3, 4, IGNORE], [6, IGNORE, IGNORE, IGNORE]]
    assert backward_targets.tolist() == [[IGNORE, 1, 2, 3], [IGNORE, 5, IGNORE, IGNORE]]


@pytest.mark.parametrize("clip", [3.0, None], ids=["clipped-loop", "nn.LSTM"])
def test_forward_lm_never_sees_the_future_nor_backward_lm_the_past(clip):
    model = tiny(cell_clip=clip, proj_clip=clip)
    a = chars(1, 7, seed=1)
    t = 3
    later = a.clone()
    later[0, t + 1 :] = chars(1, 3, seed=2)[0]
    earlier = a.clone()
    earlier[0, :t] = chars(1, 3, seed=3)[0]
    with torch.no_grad():
        base, changed_later, changed_earlier = model(a), model(later), model(earlier)
    for j in range(1, 3):
        fwd, bwd = slice(0, P), slice(P, 2 * P)
        assert torch.equal(base[j][0, : t + 1, fwd], changed_later[j][0, : t + 1, fwd])
        assert torch.equal(base[j][0, t:, bwd], changed_earlier[j][0, t:, bwd])
        # and each direction does see the change on its own side
        assert not torch.allclose(base[j][0, t + 1, fwd], changed_later[j][0, t + 1, fwd])
        assert not torch.allclose(base[j][0, t, bwd], changed_later[j][0, t, bwd])
    # layer 0 is context-independent: [x; x]
    assert torch.equal(base[0][0, : t + 1], changed_later[0][0, : t + 1])
    assert torch.equal(base[0][..., :P], base[0][..., P:])


@pytest.mark.parametrize("clip", [3.0, None], ids=["clipped-loop", "nn.LSTM"])
def test_sentence_alone_equals_sentence_in_padded_batch(clip):
    model = tiny(cell_clip=clip, proj_clip=clip)
    batch = chars(2, 6)
    batch[1, 4:] = 0  # second sentence has 4 tokens
    with torch.no_grad():
        together = model(batch)  # mask from the zero rows
        alone = model(batch[1:, :4])
    for layer_batch, layer_alone in zip(together, alone, strict=True):
        assert layer_batch.shape == (2, 6, 2 * P)
        torch.testing.assert_close(layer_batch[1, :4], layer_alone[0], atol=1e-6, rtol=0)
        assert layer_batch[1, 4:].eq(0).all()


def test_clipped_loop_equals_nn_lstm_when_the_clips_never_bind():
    batch = chars(2, 5)
    with torch.no_grad():
        loop = tiny(cell_clip=1e9, proj_clip=1e9)(batch)
        fused = tiny(cell_clip=None, proj_clip=None)(batch)
    for a, b in zip(loop, fused, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_projection_clip_bounds_the_first_layer_states():
    with torch.no_grad():
        first = tiny(proj_clip=0.02)(chars(2, 5))[1]  # no residual into layer 1
    assert first.abs().max().item() == pytest.approx(0.02)
    unclipped = tiny(proj_clip=None)(chars(2, 5))[1]
    assert unclipped.abs().max().item() > 0.02


@pytest.mark.parametrize("variant", [{}, {"share_softmax": False}], ids=["shared", "untied"])
def test_loss_is_the_sum_of_hand_computed_token_nlls(variant):
    model = tiny(**variant)
    batch = chars(2, 5)
    batch[1, 3:] = 0
    mask = batch.ne(0).any(-1)
    words = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(4))
    forward_targets, backward_targets = sentence_targets(words, mask)
    loss, n = model.lm_loss(batch, mask, forward_targets, backward_targets)
    assert n == 2 * (4 + 2)
    top = model(batch, mask)[-1]  # (B, T, 2P)
    backward_softmax = model.backward_softmax or model.softmax
    expected = 0.0
    for b, length in enumerate([5, 3]):
        fwd_logp = F.log_softmax(model.softmax(top[b, :, :P]), -1)  # (T, V)
        bwd_logp = F.log_softmax(backward_softmax(top[b, :, P:]), -1)
        for t in range(length):
            if t + 1 < length:  # forward LM at t predicts token t + 1
                expected -= fwd_logp[t, words[b, t + 1]]
            if t > 0:  # backward LM at t predicts token t - 1
                expected -= bwd_logp[t, words[b, t - 1]]
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-6)


def test_adaptive_softmax_loss_matches_its_log_probabilities():
    model = tiny(adaptive_softmax_cutoffs=[10])
    batch = chars(1, 4)
    words = torch.tensor([[3, 12, 40, 7]])
    loss, n = model.lm_loss(batch, None, *sentence_targets(words, torch.ones(1, 4)))
    top = model(batch)[-1][0]  # (T, 2P)
    fwd = model.softmax.log_prob(top[:3, :P]).gather(1, words[0, 1:, None]).sum()
    bwd = model.softmax.log_prob(top[1:, P:]).gather(1, words[0, :3, None]).sum()
    assert n == 6
    torch.testing.assert_close(loss, -(fwd + bwd))


def test_every_parameter_gets_a_gradient_and_dropout_changes_training():
    model = tiny(dropout=0.2, share_softmax=False).train()
    batch = chars(2, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    words = torch.randint(0, 50, (2, 5))
    loss, _ = model.lm_loss(batch, mask, *sentence_targets(words, mask))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.token_encoder.embedding.weight.grad[0].eq(0).all()  # padding character row
    model.eval()
    again, _ = model.lm_loss(batch, mask, *sentence_targets(words, mask))
    assert not torch.allclose(loss, again)


def test_left_padded_mask_is_refused():
    with pytest.raises(ValueError, match="right-padded"):
        tiny()(chars(1, 3), torch.tensor([[False, True, True]]))


def test_encoder_protocol():
    model = tiny()
    assert (model.hidden_size, model.num_layers) == (2 * P, 2)
    batch = chars(1, 3)
    layers = model.forward_all_layers(batch, torch.ones(1, 3), None)
    assert len(layers) == 3
    assert all(torch.equal(a, b) for a, b in zip(layers, model(batch), strict=True))
    assert dataclasses.asdict(model.config) == model.config.to_dict()


def test_clipped_cell_follows_tf_lstmcell_step_by_step():
    # TF LSTMCell(num_proj, cell_clip, proj_clip): c = clip(sig(f) c + sig(i) tanh(g)),
    # h = clip(W_hr (sig(o) tanh(c))); the clipped c is carried to the next step.
    torch.manual_seed(0)
    layer = ProjectedLstm(3, 5, 2, cell_clip=0.5, proj_clip=0.3)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 1.5)  # large enough that both clips bind
    x = torch.randn(1, 6, 3)
    m = layer.lstm
    h, c, expected, c_seen = torch.zeros(2), torch.zeros(5), [], []
    for t in range(6):
        z = m.weight_ih_l0 @ x[0, t] + m.weight_hh_l0 @ h + m.bias_ih_l0 + m.bias_hh_l0
        i, f, g, o = z.split(5)
        c = (torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)).clamp(-0.5, 0.5)
        h = (m.weight_hr_l0 @ (torch.sigmoid(o) * torch.tanh(c))).clamp(-0.3, 0.3)
        expected.append(h)
        c_seen.append(c)
    torch.testing.assert_close(layer(x)[0], torch.stack(expected))
    assert torch.stack(c_seen).abs().max() == 0.5 and torch.stack(expected).abs().max() == 0.3


def test_residual_connections_start_at_the_second_layer():
    model = tiny()
    batch = chars(1, 4)
    with torch.no_grad():
        layers = model(batch)
        x, f1, f2 = layers[0][..., :P], layers[1][..., :P], layers[2][..., :P]
        torch.testing.assert_close(f1, model.forward_lstm[0](x))  # no residual from x_k
        torch.testing.assert_close(f2, model.forward_lstm[1](f1) + f1)


def test_blocked_softmax_nll_equals_cross_entropy_with_gradients(monkeypatch):
    from muppets.models import lm_softmax

    monkeypatch.setattr(lm_softmax, "BLOCK_ELEMENTS", 7 * 50)  # blocks of 32 rows: 3 blocks
    g = torch.Generator().manual_seed(5)
    h = torch.randn(70, 8, generator=g)
    h[3] *= 400.0  # logits spread ~1e3: the target probabilities of row 3 underflow to 0
    weight, bias = torch.randn(50, 8, generator=g), torch.randn(50, generator=g)
    targets = torch.randint(0, 50, (70,), generator=g)
    results = []
    for fn in (lm_softmax.softmax_nll_sum, None):
        leaves = [t.clone().requires_grad_() for t in (h, weight, bias)]
        if fn is None:
            loss = F.cross_entropy(F.linear(*leaves), targets, reduction="sum")
        else:
            loss = fn(*leaves, targets)
        (loss / 3).backward()
        results.append([loss.detach()] + [t.grad for t in leaves])
    assert results[0][0] > 1e3  # row 3 is in, with a finite loss
    for blocked, plain in zip(*results, strict=True):
        torch.testing.assert_close(blocked, plain, atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # no gradient wanted: the plain path, the same number
        assert lm_softmax.softmax_nll_sum(h, weight, bias, targets) == results[1][0]
