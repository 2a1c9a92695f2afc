"""ELECTRA through the commands: pretrain (resume == straight through, held-out metrics, both
towers in the checkpoint), convert both ways, fine-tune / evaluate the discriminator, bad input."""

import contextlib
import io
import json

import pytest
import torch
from conftest import BERT_TINY
from safetensors.torch import load_file, save_file

from muppets.cli.main import main
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.training.checkpoint import checkpoints, save_pretrained
from muppets.training.pretrained import load_finetuned, load_pretrained
from tests.test_pretrain_recipe import shards  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def pretrain_args(shards, out, *extra):  # noqa: F811
    return [
        "pretrain",
        *("--train-data", str(shards / "train"), "--valid-data", str(shards / "valid")),
        *("--out", str(out), "--model", "electra-tiny", "--objective", "electra"),
        *("--max-seq-length", "64", "--batch-size", "8", "--micro-batch-size", "4"),
        *("--partitions", "2", "--warmup-steps", "2", "--log-every", "2", "--eval-every", "0"),
        *("--save-every", "2", "--eval-instances", "16", "--learning-rate", "1e-3"),
        *extra,
    ]


def weights(run):
    return load_file(checkpoints(run / "checkpoints")[-1] / "model.safetensors")


def test_pretrain_resumes_bitwise_and_reports_electra_metrics(shards, tmp_path):  # noqa: F811
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(pretrain_args(shards, straight, "--max-steps", "4")) == 0
    assert main(pretrain_args(shards, resumed, "--max-steps", "2")) == 0
    assert main(pretrain_args(shards, resumed, "--max-steps", "4", "--resume")) == 0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("generator.layers.") for k in a)
    assert any(k.startswith("discriminator.layers.") for k in a)
    result = json.loads((straight / "result.json").read_text())
    scores = result["eval"]
    assert {"mlm_accuracy", "disc_accuracy", "disc_auc", "replaced_share"} <= set(scores)
    assert 0.05 < scores["replaced_share"] < 0.16  # at most 15% masked, most samples wrong
    assert abs(scores["loss"] - scores["mlm_loss"] - 50 * scores["disc_bce"]) < 1e-6
    model, config, _ = load_pretrained(straight)
    assert config.model_type == "electra" and model.encoder is model.discriminator


def test_convert_both_ways_keeps_the_weights(shards, tmp_path):  # noqa: F811
    import transformers

    run = tmp_path / "run"
    assert main(pretrain_args(shards, run, "--max-steps", "2")) == 0
    hf, back = tmp_path / "hf", tmp_path / "back"
    assert main(["convert", "--input", str(run), "--out", str(hf), "--to", "hf"]) == 0
    disc = transformers.ElectraForPreTraining.from_pretrained(hf)
    gen = transformers.ElectraForMaskedLM.from_pretrained(hf / "generator")
    assert gen.config.hidden_size == 32 and disc.config.embedding_size == 64
    assert (hf / "generator" / "vocab.txt").exists()
    assert main(["convert", "--input", str(hf), "--out", str(back), "--to", "muppets"]) == 0
    a, b = weights(run), load_file(back / "model.safetensors")
    kept = [k for k in a if ".pooler." not in k]  # transformers' ELECTRA has no pooler
    assert all(torch.equal(a[k], b[k]) for k in kept) and len(kept) > 40


@pytest.fixture(scope="module")
def electra_checkpoint(finetune_workspace):
    root, _, tokenizer, _ = finetune_workspace
    config = preset_config(
        "electra-tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, embedding_size=16
    )
    torch.manual_seed(0)
    checkpoint = root / "electra"
    save_pretrained(checkpoint, build_pretraining_model(config), config.to_dict())
    tokenizer.save(checkpoint)
    return root, checkpoint


def test_finetune_and_evaluate_use_the_discriminator(electra_checkpoint, tmp_path, capsys):
    root, checkpoint = electra_checkpoint
    out = tmp_path / "sst2"
    args = ["--task", "sst2", "--data", str(root / "glue"), "--model", str(checkpoint)]
    args += ["--out", str(out), "--epochs", "6", "--early-stopping-patience", "0", *BERT_TINY]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", *args]) == 0
    tuned = load_file(out / "seed-1" / "model.safetensors")
    assert "encoder.embeddings_project.weight" in tuned
    assert not any(k.startswith(("generator", "encoder.generator")) for k in tuned)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(root / "glue")]) == 0
    precision, scores = capsys.readouterr().out.strip().splitlines()  # the arithmetic, first
    assert (
        precision.startswith("precision: ") and scores == "sst2 dev (16 examples): accuracy 1.0000"
    )


def test_finetune_uses_electras_classification_head_which_goes_to_transformers(
    electra_checkpoint, tmp_path, capsys
):
    """No --pooling: ElectraClassificationHead (dense + GELU on the first token), so the
    fine-tuned model converts to ElectraForSequenceClassification with the same logits."""
    transformers = pytest.importorskip("transformers")
    root, checkpoint = electra_checkpoint
    out = tmp_path / "sst2"
    args = ["--task", "sst2", "--data", str(root / "glue"), "--model", str(checkpoint)]
    args += ["--out", str(out), "--epochs", "1", "--learning-rate", "1e-2"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", *args]) == 0
    run = out / "seed-1"
    assert json.loads((run / "task.json").read_text())["pooling"] == "electra"
    tuned = load_file(run / "model.safetensors")
    assert {"dense.weight", "dense.bias", "classifier.weight"} <= set(tuned)
    hf = tmp_path / "hf"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", "--input", str(run), "--out", str(hf), "--to", "hf"]) == 0
    theirs = transformers.ElectraForSequenceClassification.from_pretrained(hf).eval()
    model, _, tokenizer = load_finetuned(run)
    rows = [tokenizer.encode_pair("the cat sat .", "a dog ran"), tokenizer.encode_pair("hot", None)]
    ids = torch.full((2, len(rows[0][0])), tokenizer.pad_id)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for n, (row, segment) in enumerate(rows):
        ids[n, : len(row)], types[n, : len(row)], mask[n, : len(row)] = (
            torch.tensor(row),
            torch.tensor(segment),
            1,
        )
    with torch.no_grad():
        want = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert torch.allclose(model.eval()(ids, mask, types), want, atol=1e-5)


def test_bad_electra_input_is_one_line(electra_checkpoint, shards, tmp_path, cli_error):  # noqa: F811
    root, checkpoint = electra_checkpoint
    line = cli_error(pretrain_args(shards, tmp_path / "x", "--objective", "mlm"))
    assert "model 'electra-tiny' with objective 'mlm'" in line
    # A transformers generator given as the model to fine-tune.
    hf = tmp_path / "hf"
    assert main(["convert", "--input", str(checkpoint), "--out", str(hf), "--to", "hf"]) == 0
    finetune = ["finetune", "--task", "sst2", "--data", str(root / "glue"), "--out", str(tmp_path)]
    line = cli_error([*finetune, "--model", str(hf / "generator")])
    assert "ELECTRA generator (ElectraForMaskedLM)" in line
    # A checkpoint whose generator embeddings are not the discriminator's.
    bad = tmp_path / "bad"
    save_pretrained(
        bad, load_pretrained(checkpoint)[0], json.loads((checkpoint / "config.json").read_text())
    )
    for f in checkpoint.glob("*.json"):
        if f.name != "config.json":
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "vocab.txt").write_bytes((checkpoint / "vocab.txt").read_bytes())
    tensors = load_file(bad / "model.safetensors")
    tensors["generator.embeddings.norm.bias"] = torch.ones_like(
        tensors["discriminator.embeddings.norm.bias"]
    )
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    line = cli_error([*finetune, "--model", str(bad)])
    assert "embeddings disagree (generator.embeddings.norm.bias)" in line
    # A generator larger than the discriminator, in a transformers pair.
    config = json.loads((hf / "generator" / "config.json").read_text())
    config.update(hidden_size=64, intermediate_size=256)
    (hf / "generator" / "config.json").write_text(json.dumps(config))
    line = cli_error(
        ["convert", "--input", str(hf), "--out", str(tmp_path / "y"), "--to", "muppets"]
    )
    assert "generator_hidden_size=2.0" in line and "larger than the discriminator" in line
