"""Pretraining objectives: exact loss sums, counts, micro-batch invariance, gradients, metrics."""

import pytest
import torch

from muppets.errors import ConfigError
from muppets.models.registry import build_pretraining_model
from muppets.tasks.objectives import objective_for, total_loss
from tests.test_bert_parity import padded_batch, tiny_config


def make_batch(config, lengths, seed=0, pair_key="next_sentence_label"):
    ids, mask, segments, masked = padded_batch(config, lengths, seed)
    g = torch.Generator().manual_seed(seed + 100)
    targets = torch.randint(0, config.vocab_size, ids.shape, generator=g)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": segments,
        "labels": targets.masked_fill(~masked, -100),
    }
    batch[pair_key] = torch.randint(0, 2, (len(lengths),), generator=g)
    return batch


def hand_sums(model, batch, pair_key="next_sentence_label"):
    """Cross-entropy sums from full (B, T, V) log-probabilities, picked by explicit loops."""
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    log_probs = out.mlm_logits.log_softmax(-1)  # (B, T, V)
    labels = batch["labels"].tolist()
    mlm = sum(
        -log_probs[b, t, y] for b, row in enumerate(labels) for t, y in enumerate(row) if y != -100
    )
    pair_log_probs = out.pair_logits.log_softmax(-1)  # (B, 2)
    pair_labels = batch[pair_key].tolist()
    pair = sum(-pair_log_probs[b, y] for b, y in enumerate(pair_labels) if y != -100)
    return mlm, pair


@pytest.mark.parametrize(
    "name,pair_key", [("mlm+nsp", "next_sentence_label"), ("mlm+sop", "sentence_order_label")]
)
def test_loss_sums_are_hand_computed_cross_entropy_sums(name, pair_key):
    torch.manual_seed(0)
    config = tiny_config()
    model = build_pretraining_model(config).eval()
    batch = make_batch(config, (12, 7, 3), pair_key=pair_key)
    objective = objective_for(name)
    with torch.no_grad():
        sums = objective(model, batch)
    mlm, pair = hand_sums(model, batch, pair_key)
    task = name.split("+")[1]
    assert sums.keys() == {"mlm", task}
    assert torch.allclose(sums["mlm"], mlm, rtol=1e-5)
    assert torch.allclose(sums[task], pair, rtol=1e-5)
    assert objective.count_targets(batch) == {"mlm": int(batch["labels"].ne(-100).sum()), task: 3}


def test_k_micro_batches_equal_one_big_batch():
    torch.manual_seed(1)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = build_pretraining_model(config).train()
    objective = objective_for("mlm+nsp")
    batch = make_batch(config, (12, 3, 9, 5, 11, 4), seed=1)

    def gradients(micro_batches):
        model.zero_grad()
        counts = {}
        for mb in micro_batches:
            for name, n in objective.count_targets(mb).items():
                counts[name] = counts.get(name, 0) + n
        for mb in micro_batches:
            total_loss(objective(model, mb), counts).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    def rows(lo, hi):  # a micro-batch padded only to its own longest sequence
        T = int(batch["attention_mask"][lo:hi].sum(1).max())
        return {k: v[lo:hi, :T] if v.dim() == 2 else v[lo:hi] for k, v in batch.items()}

    micro = [rows(0, 1), rows(1, 4), rows(4, 6)]
    masked_per_micro = [int(mb["labels"].ne(-100).sum()) for mb in micro]
    assert len(set(masked_per_micro)) == 3
    one = gradients([batch])
    split = gradients(micro)
    for name in one:
        assert torch.allclose(one[name], split[name], atol=1e-6), name


def test_every_parameter_gets_a_gradient_from_mlm_and_nsp():
    torch.manual_seed(2)
    config = tiny_config()
    model = build_pretraining_model(config).train()
    objective = objective_for("mlm+nsp")
    batch = make_batch(config, (12, 8, 5), seed=2)
    total_loss(objective(model, batch), objective.count_targets(batch)).backward()
    names = [name for name, _ in model.named_parameters()]
    assert not any("decoder" in name for name in names)  # tied to the word embeddings
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlm_only_trains_everything_but_the_unused_pooler():
    torch.manual_seed(3)
    config = tiny_config("roberta")
    model = build_pretraining_model(config).train()
    objective = objective_for("mlm")
    batch = make_batch(config, (10, 4), seed=3)
    sums = objective(model, batch)
    assert sums.keys() == {"mlm"} and objective.count_targets(batch).keys() == {"mlm"}
    total_loss(sums, objective.count_targets(batch)).backward()
    for name, p in model.named_parameters():
        if name.startswith("encoder.pooler."):
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_metrics_count_correct_predictions():
    torch.manual_seed(4)
    config = tiny_config()
    model = build_pretraining_model(config).eval()
    batch = make_batch(config, (12, 6, 9, 2), seed=4)
    batch["next_sentence_label"][1] = -100  # an unlabelled pair is not counted
    metrics = objective_for("mlm+nsp").metrics(model, batch)
    masked = batch["labels"] != -100
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mlm_correct = (out.mlm_logits.argmax(-1)[masked] == batch["labels"][masked]).sum()
    kept = torch.tensor([0, 2, 3])
    nsp_correct = (out.pair_logits.argmax(-1)[kept] == batch["next_sentence_label"][kept]).sum()
    mlm_sum, _ = hand_sums(model, batch)
    assert metrics["mlm_count"] == masked.sum() and metrics["nsp_count"] == 3
    assert metrics["mlm_correct"] == mlm_correct and metrics["nsp_correct"] == nsp_correct
    assert metrics["mlm_loss_sum"] == pytest.approx(float(mlm_sum), rel=1e-5)


def test_objective_errors():
    with pytest.raises(ConfigError, match="valid objectives: mlm, mlm\\+nsp, mlm\\+sop"):
        objective_for("clm")
    config = tiny_config()
    batch = make_batch(config, (4, 3))
    del batch["next_sentence_label"]
    with pytest.raises(ConfigError, match="next_sentence_label"):
        objective_for("mlm+nsp")(build_pretraining_model(config), batch)
