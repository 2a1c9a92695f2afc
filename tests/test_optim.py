"""AdamW parameter groups and learning-rate schedules, pinned to exact values."""

import math

import pytest
import torch
from test_loop import ToyMLM
from torch import nn

from muppets.training.optim import build_optimizer, decays, lr_factor, param_groups


class Block(nn.Module):
    """Names in the styles of BERT (LayerNorm), GPT/T5 (ln_f, layer_norm) and a 2-D norm gain."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(4, 4)
        self.LayerNorm = nn.LayerNorm(4)
        self.ln_f = nn.LayerNorm(4)
        self.layer_norm_scales = nn.Parameter(torch.ones(2, 4))  # 2-D, but a norm by name
        self.word_embeddings = nn.Embedding(10, 4)
        self.scalar_mix = nn.Parameter(torch.zeros(3))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def names(model, group):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in group["params"]]


def test_exactly_which_parameters_get_weight_decay():
    model = Block()
    decayed, not_decayed = param_groups(model, weight_decay=0.01)
    assert names(model, decayed) == ["dense.weight", "word_embeddings.weight"]
    assert names(model, not_decayed) == [  # a module's own parameters come before its children's
        "layer_norm_scales", "scalar_mix", "dense.bias", "LayerNorm.weight", "LayerNorm.bias",
        "ln_f.weight", "ln_f.bias"]  # fmt: skip
    assert (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.01, 0.0)
    assert decays("encoder.layer.0.attention.output.dense.weight", torch.zeros(2, 2))
    assert not decays("encoder.layer.0.attention.output.LayerNorm.weight", torch.zeros(2, 2))


def test_a_tied_matrix_is_one_decayed_parameter():
    model = ToyMLM()
    decayed, not_decayed = param_groups(model, weight_decay=0.01)
    assert names(model, decayed) == ["embeddings.weight", "nsp.weight"]
    assert names(model, not_decayed) == ["norm.weight", "norm.bias", "decoder.bias", "nsp.bias"]


def test_optimizer_has_bert_defaults_and_the_fused_kernel_on_cpu():
    optimizer = build_optimizer(ToyMLM())
    for group, decay in zip(optimizer.param_groups, (0.01, 0.0), strict=True):
        assert (group["lr"], group["betas"], group["eps"]) == (1e-4, (0.9, 0.999), 1e-6)
        assert group["weight_decay"] == decay and group["fused"] is True


def test_linear_warmup_then_linear_decay_to_zero():
    values = [lr_factor(s, "linear", 4, 10) for s in range(11)]
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0]
    assert values == pytest.approx(expected, abs=1e-12)
    assert [lr_factor(s, "linear", 0, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]


def test_cosine_and_constant_after_warmup():
    assert lr_factor(1, "cosine", 2, 10) == 1.0  # still warming up: (1 + 1) / 2
    assert lr_factor(2, "cosine", 2, 10) == 1.0
    assert lr_factor(4, "cosine", 2, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(6, "cosine", 2, 10) == pytest.approx(0.5)
    assert lr_factor(10, "cosine", 2, 10) == pytest.approx(0.0)
    assert [lr_factor(s, "constant", 2, 10) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="linear, cosine, constant"):
        lr_factor(0, "exponential", 0, 10)
