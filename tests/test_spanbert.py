"""SpanBERT's span boundary objective: boundaries of hand-built spans, the head against the
reference's MLPWithLayerNorm written plainly, SBO predictions that depend on the boundary outputs
and the position only, the MLM + SBO objective, and `muppets pretrain --objective mlm+sbo` with
the SBO accuracy held out and a checkpoint that converts as BERT (the SBO head left out, said)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.models.bert import BertConfig
from muppets.models.registry import build_pretraining_model
from muppets.models.span_boundary import SpanBertModel, span_boundaries
from muppets.tasks.objectives import objective_for
from muppets.training.checkpoint import checkpoints
from muppets.training.pretrained import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config():
    return BertConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        hidden_act="gelu",
    )


def test_span_boundaries_of_hand_built_runs():
    masked = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0, 1, 0],  # spans 1..3 and 6..6
            [0, 0, 1, 1, 0, 1, 0, 0],  # spans 2..3 and 5..5 (one token between them)
        ],
        dtype=torch.bool,
    )
    left, right, offset = span_boundaries(masked)
    T = 8
    assert left.tolist() == [0, 0, 0, 5, T + 1, T + 1, T + 4]
    assert right.tolist() == [4, 4, 4, 7, T + 4, T + 4, T + 6]
    assert offset.tolist() == [0, 1, 2, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="without a token on each side"):
        span_boundaries(torch.tensor([[0, 1, 1]], dtype=torch.bool))


def plain_sbo(head, left, right, offset, words):
    """pair_bert.py's BertPairTargetPredictionHead + MLPWithLayerNorm, written out."""
    p = head.position_embeddings.weight[offset]  # (M, 200)
    h = torch.cat([left, right, p], -1)
    h = F.layer_norm(
        F.gelu(h @ head.dense1.weight.T + head.dense1.bias),
        (32,),
        head.norm1.weight,
        head.norm1.bias,
        1e-12,
    )
    h = F.layer_norm(
        F.gelu(h @ head.dense2.weight.T + head.dense2.bias),
        (32,),
        head.norm2.weight,
        head.norm2.bias,
        1e-12,
    )
    return h @ words.T + head.bias


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 97, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    masked = torch.zeros(2, 12, dtype=torch.bool)
    masked[0, 2:5], masked[0, 7], masked[1, 1:4], masked[1, 5:8] = True, True, True, True
    return ids, mask, masked


def test_model_rows_are_the_boundaries_and_the_head_is_the_reference():
    torch.manual_seed(0)
    model = build_pretraining_model(tiny_config(), with_sbo_head=True).eval()
    assert isinstance(model, SpanBertModel) and model.pair_head is None
    ids, mask, masked = batch()
    with torch.no_grad():
        out = model(ids, mask, None, masked)
        hidden = model.encoder(ids, mask).flatten(0, 1)  # (B * T, H), every position
        left, right, offset = span_boundaries(masked)
        words = model.encoder.embeddings.word_embeddings.weight
        expected = plain_sbo(model.sbo_head, hidden[left], hidden[right], offset, words)
        mlm = model.mlm_head(hidden[masked.flatten()], words)
    assert out.sbo_logits.shape == (10, 97)
    assert (out.sbo_logits - expected).abs().max() < 1e-5
    assert (out.mlm_logits - mlm).abs().max() < 1e-5
    assert (left % 12).tolist() == [1, 1, 1, 6, 0, 0, 0, 4, 4, 4]
    assert (right % 12).tolist() == [5, 5, 5, 8, 4, 4, 4, 8, 8, 8]


def test_sbo_predictions_depend_only_on_boundary_outputs_and_position():
    """d(SBO logits)/d(last hidden states) is zero everywhere but at the boundary tokens, the
    masked tokens' own outputs included; a span's logits change with its offset only through
    the position embedding."""
    torch.manual_seed(1)
    model = build_pretraining_model(tiny_config(), with_sbo_head=True).eval()
    ids, mask, masked = batch()
    hidden = model.encoder(ids, mask).detach().flatten(0, 1).requires_grad_(True)
    left, right, offset = span_boundaries(masked)
    words = model.encoder.embeddings.word_embeddings.weight.detach()
    logits = model.sbo_head(hidden[left], hidden[right], offset, words)
    logits.square().sum().backward()
    touched = hidden.grad.abs().sum(-1).ne(0).nonzero().squeeze(1)
    assert touched.tolist() == sorted(set(left.tolist()) | set(right.tolist()))
    assert not set(touched.tolist()) & set(masked.flatten().nonzero().squeeze(1).tolist())
    # two tokens of one span: same boundaries, so they differ by the position embedding alone
    with torch.no_grad():
        a = model.sbo_head(hidden[left[:1]], hidden[right[:1]], torch.tensor([0]), words)
        b = model.sbo_head(hidden[left[:1]], hidden[right[:1]], torch.tensor([1]), words)
        assert torch.allclose(a, logits[:1], atol=1e-6) and torch.allclose(
            b, logits[1:2], atol=1e-6
        )
        model.sbo_head.position_embeddings.weight[1] = model.sbo_head.position_embeddings.weight[0]
        c = model.sbo_head(hidden[left[:1]], hidden[right[:1]], torch.tensor([1]), words)
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_objective_sums_mlm_and_sbo_over_the_masked_tokens():
    torch.manual_seed(2)
    model = build_pretraining_model(tiny_config(), with_sbo_head=True).eval()
    ids, mask, masked = batch()
    labels = torch.where(masked, ids, -100)
    data = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    objective = objective_for("mlm+sbo")
    sums = objective(model, data)
    assert objective.count_targets(data) == {"mlm": 10, "sbo": 10}
    out = model(ids, mask, None, masked)
    targets = ids[masked]
    assert torch.allclose(sums["sbo"], F.cross_entropy(out.sbo_logits, targets, reduction="sum"))
    metrics = objective.metrics(model, data)
    assert metrics["sbo_count"] == 10
    assert metrics["sbo_correct"] == float(out.sbo_logits.argmax(-1).eq(targets).sum())


def test_joint_projection_and_loss_equal_the_heads_written_plainly_with_gradients():
    """The model projects both heads' rows in one matmul and the objective takes one
    cross-entropy over them: loss sums and every parameter's gradient equal the plain path
    (encoder over every position, each head with its own projection and bias, two losses)."""
    torch.manual_seed(3)
    model = build_pretraining_model(tiny_config(), with_sbo_head=True).eval()
    ids, mask, masked = batch()
    data = {"input_ids": ids, "attention_mask": mask, "labels": torch.where(masked, ids, -100)}
    sums = objective_for("mlm+sbo")(model, data)
    (sums["mlm"] + 2 * sums["sbo"]).backward()
    joint = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    hidden = model.encoder(ids, mask).flatten(0, 1)  # (B * T, H)
    left, right, offset = span_boundaries(masked)
    words = model.encoder.embeddings.word_embeddings.weight
    targets = ids[masked]
    mlm = F.cross_entropy(model.mlm_head(hidden[masked.flatten()], words), targets, reduction="sum")
    sbo_logits = model.sbo_head(hidden[left], hidden[right], offset, words)
    sbo = F.cross_entropy(sbo_logits, targets, reduction="sum")
    (mlm + 2 * sbo).backward()
    assert (sums["mlm"] - mlm).abs() < 1e-5 and (sums["sbo"] - sbo).abs() < 1e-5
    plain = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert joint.keys() == plain.keys() and "sbo_head.bias" in joint and "mlm_head.bias" in joint
    for name, grad in plain.items():
        assert (joint[name] - grad).abs().max() < 1e-5, name


def test_a_batch_without_masked_tokens_gives_zero_sums():
    model = build_pretraining_model(tiny_config(), with_sbo_head=True).eval()
    ids, mask, _ = batch()
    data = {"input_ids": ids, "attention_mask": mask, "labels": torch.full_like(ids, -100)}
    objective = objective_for("mlm+sbo")
    sums = objective(model, data)
    assert sums["mlm"].item() == 0.0 and sums["sbo"].item() == 0.0
    assert objective.metrics(model, data)["sbo_count"] == 0


def test_pretrain_mlm_sbo_holds_out_sbo_accuracy_and_converts_as_bert(
    tiny_shards, tmp_path, capsys
):
    import transformers

    out = tmp_path / "spanbert"
    args = ["pretrain", "--train-data", str(tiny_shards / "train")]
    args += ["--valid-data", str(tiny_shards / "valid"), "--out", str(out)]
    args += ["--model", "bert-tiny", "--objective", "mlm+sbo"]
    args += ["--max-seq-length", "64", "--batch-size", "8", "--micro-batch-size", "4"]
    args += ["--partitions", "2", "--warmup-steps", "2", "--log-every", "2", "--eval-every", "0"]
    args += ["--save-every", "3", "--eval-instances", "16", "--max-steps", "3"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["masking"] == "span"
    assert {"mlm_accuracy", "sbo_accuracy", "sbo_loss"} <= set(result["eval"])
    assert "nsp_accuracy" not in result["eval"]
    saved = checkpoints(out / "checkpoints")[-1]
    assert "sbo_head.dense1.weight" in load_file(saved / "model.safetensors")
    capsys.readouterr()
    hf = tmp_path / "hf"
    assert main(["convert", "--input", str(out), "--out", str(hf), "--to", "hf"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        f"convert: the span boundary (SBO) head of {saved} is for pretraining only: not written "
        "(transformers has no such head; a SpanBERT checkpoint is BERT's shape, BertForMaskedLM)"
    )
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    theirs = transformers.BertForMaskedLM.from_pretrained(hf).eval()
    ours = load_checkpoint(saved)
    ids = torch.tensor([ours.tokenizer.encode_pair("the river", "in the park")[0]])
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[0, 2:4] = True
    with torch.no_grad():
        expected = theirs(input_ids=ids).logits[masked]
        got = ours.model(ids, None, None, masked).mlm_logits
    assert (got - expected).abs().max() < 1e-5
