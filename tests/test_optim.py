"""AdamW parameter groups and learning-rate schedules, pinned to exact values."""

import math

import pytest
import torch
from test_loop import ToyMLM
from torch import nn

from muppets.models.bert import BertModel
from muppets.models.registry import preset_config
from muppets.tasks.classification import SequenceClassifier
from muppets.training.optim import (
    Schedule,
    build_optimizer,
    decays,
    lr_factor,
    param_groups,
    set_learning_rate,
)


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
        "layer_norm_scales",
        "scalar_mix",
        "dense.bias",
        "LayerNorm.weight",
        "LayerNorm.bias",
        "ln_f.weight",
        "ln_f.bias",
    ]
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


def test_layer_wise_decay_gives_electras_rates_per_depth():
    """google-research/electra `_get_layer_lrs` with L = 2: embeddings decay^4, layer 0 decay^3,
    layer 1 decay^2, the head (and BERT's pooler) the full rate; weight decay as without it."""
    model = SequenceClassifier(BertModel(preset_config("bert-tiny", vocab_size=50)), 2)
    optimizer = build_optimizer(model, learning_rate=1e-3, weight_decay=0.01, layer_decay=0.5)
    set_learning_rate(optimizer, 2e-3)
    rates, params = {}, dict(model.named_parameters())
    for group in optimizer.param_groups:
        for name in names(model, group):
            rates[name] = group["lr"]
            assert group["weight_decay"] == (0.01 if decays(name, params[name]) else 0.0)
    assert len(rates) == len(list(model.parameters()))
    expected = {
        "encoder.embeddings.word_embeddings.weight": 2e-3 * 0.5**4,
        "encoder.embeddings.norm.bias": 2e-3 * 0.5**4,
        "encoder.layers.0.attention.qkv.weight": 2e-3 * 0.5**3,
        "encoder.layers.1.feed_forward_norm.weight": 2e-3 * 0.5**2,
        "encoder.pooler.dense.weight": 2e-3,
        "classifier.bias": 2e-3,
    }
    assert {name: rates[name] for name in expected} == pytest.approx(expected, rel=1e-12)
    # Off (1.0): exactly the two groups of before, which older checkpoints' optimizer state has.
    plain = build_optimizer(model, weight_decay=0.01).param_groups
    assert [g["lr_scale"] for g in plain] == [1.0, 1.0] and len(plain) == 2


def test_layer_lr_decay_out_of_range_is_one_line(cli_error, tmp_path):
    line = cli_error(
        ["finetune", "--task", "sst2", "--out", str(tmp_path), "--layer-lr-decay", "0"]
    )
    assert "layer_lr_decay must be in (0, 1], got 0.0" in line


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


def test_a_schedule_never_replanned_is_lr_factor():
    for name in ("linear", "cosine", "constant"):
        schedule = Schedule(name, 3, 12)
        assert [schedule.factor(s) for s in range(13)] == [
            lr_factor(s, name, 3, 12) for s in range(13)
        ]


def test_replanning_in_decay_goes_on_from_the_last_progress_to_zero_at_the_new_total():
    old = Schedule("linear", 4, 20)  # progress at step 9: 5 / 16
    longer = old.replanned(10, 30, warmup_steps=4)
    assert (longer.restart_step, longer.restart_value) == (10, 5 / 16)
    assert longer.factor(10) == pytest.approx((11 / 16) * (20 / 21), abs=1e-15)
    assert longer.factor(10) < old.factor(9)  # no jump back up, although the run got longer
    assert longer.factor(29) == pytest.approx((11 / 16) / 21) and longer.factor(30) == 0.0
    shorter = old.replanned(10, 12, warmup_steps=4)
    assert [shorter.factor(s) for s in (10, 11, 12)] == pytest.approx([11 / 16 * 2 / 3, 11 / 48, 0])
    cosine = Schedule("cosine", 0, 100).replanned(50, 60, warmup_steps=0)
    p = 0.49 + 0.51 * 1 / 11
    assert cosine.factor(50) == pytest.approx(0.5 * (1 + math.cos(math.pi * p)))
    assert cosine.factor(60) == pytest.approx(0.0)


def test_replanning_in_warmup_ramps_from_the_last_factor_to_the_new_warmup_end():
    old = Schedule("linear", 10, 100)  # factor at step 3: 0.4
    ratio = old.replanned(4, 200, warmup_steps=20)  # a warmup ratio of a longer estimate
    assert ratio.factor(4) == pytest.approx(0.4 + 0.6 / 16)
    assert ratio.factor(19) == pytest.approx(1.0) and ratio.factor(20) == 1.0
    assert ratio.factor(110) == pytest.approx(0.5)  # decay from step 20 to 200
    same = old.replanned(4, 50, warmup_steps=10)  # a fixed warmup: the same ramp
    assert [same.factor(s) for s in range(4, 10)] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1])
    done = old.replanned(4, 50, warmup_steps=2)  # shorter than what is done: warmup ends now
    assert done.warmup_steps == 4 and done.factor(4) == 1.0 and done.factor(50) == 0.0
    after = Schedule("linear", 4, 20).replanned(4, 40, warmup_steps=8)  # warmup over: kept
    assert after.warmup_steps == 4 and after.factor(4) == 1.0 and after.factor(22) == 0.5
