"""Fine-tuning a tiny random BERT end to end on hand-written sentence tasks (conftest.py): a rule
learnt to 100% dev accuracy over two seeds, evaluate/predict of the result, --freeze, the GLUE
table, a new JSONL dataset, the loop keeping its best model, and bad input as one line with
FILE:LINE and exit status 2. SQuAD, CoNLL and batched predictions: test_finetune_heads.py."""

import contextlib
import io
import json
import shutil

import pytest
import torch
from conftest import BERT_TINY as TINY
from conftest import finetune_bert as finetune
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.tokenization.wordpiece import train_wordpiece
from muppets.training.logging import read_metrics
from muppets.training.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sst2_run(finetune_workspace, tmp_path_factory):
    root, checkpoint, _, _ = finetune_workspace
    out = tmp_path_factory.mktemp("sst2")
    args = (
        ["--task", "sst2", "--data", str(root / "glue")]
        + ["--model", str(checkpoint), "--out", str(out), "--seeds", "1,2"]
        + ["--epochs", "6", "--early-stopping-patience", "0", *TINY]
    )
    stdout = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(stdout):
        assert main(["finetune", *args]) == 0
    return out, stdout.getvalue().splitlines()


def test_two_seeds_learn_the_rule_and_report_the_median(sst2_run):
    out, lines = sst2_run
    assert "sst2 seed 1: dev accuracy 100.00" in "\n".join(lines)
    assert "sst2 seed 2: dev accuracy 100.00" in "\n".join(lines)
    assert lines[-1] == "sst2: median dev accuracy over 2 seed(s): 100.00"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"] == {"1": 1.0, "2": 1.0} and summary["median"] == 1.0
    metrics = json.loads((out / "seed-1" / "metrics.json").read_text())
    assert set(metrics) == {
        "task",
        "seed",
        "metric",
        "score",
        "best_step",
        "best_epoch",
        "dev",
        "history",
        "train_examples",
        "train_features",
        "steps",
        "stopped",
        "freeze",
        "train_loss",
        "elapsed_seconds",
        "precision",
    }
    assert metrics["score"] == 1.0 and metrics["dev"] == {"dev": {"accuracy": 1.0}}
    assert metrics["precision"] in ("fp32", "bf16")  # auto: what this machine computes fastest
    assert [h["epoch"] for h in metrics["history"]][:2] == [1.0, 2.0]
    assert metrics["train_examples"] == 64 and metrics["best_step"] % 8 == 0
    best = [h for h in metrics["history"] if h["step"] == metrics["best_step"]]
    assert best[0]["accuracy"] == 1.0 and max(h["accuracy"] for h in metrics["history"]) == 1.0
    task = json.loads((out / "seed-1" / "task.json").read_text())
    assert task["task"] == "sst2" and task["labels"] == ["0", "1"] and task["pooling"] == "cls"
    for name in ("config.json", "model.safetensors", "vocab.txt", "dev_metric.png"):
        assert (out / "seed-1" / name).is_file(), name
    assert not (out / "seed-1" / "checkpoints").exists()


def test_evaluate_and_predict_the_fine_tuned_model(sst2_run, finetune_workspace, tmp_path, capsys):
    out, _ = sst2_run
    root = finetune_workspace[0]
    assert main(["evaluate", "--model", str(out / "seed-2"), "--data", str(root / "glue")]) == 0
    precision, scores = capsys.readouterr().out.strip().splitlines()
    assert (
        precision.startswith("precision: ") and scores == "sst2 dev (16 examples): accuracy 1.0000"
    )
    target = tmp_path / "SST-2.tsv"
    test = root / "glue" / "SST-2" / "test.tsv"
    # a multi-seed run directory stands for its best seed
    assert main(["predict", "--model", str(out), "--input", str(test), "--out", str(target)]) == 0
    rows = target.read_text().splitlines()
    want = ["1" if "good" in line else "0" for line in test.read_text().splitlines()[1:]]
    assert rows == ["index\tprediction"] + [f"{i}\t{y}" for i, y in enumerate(want)]


def test_freeze_leaves_the_encoder_bit_identical(finetune_workspace, sst2_run, tmp_path, capsys):
    root, checkpoint, _, _ = finetune_workspace
    finetune(
        ["--task", "sst2", "--data", str(root / "glue")]
        + ["--model", str(checkpoint), "--out", str(tmp_path), "--epochs", "1"]
        + ["--freeze", *TINY],
        capsys,
    )
    before = load_file(checkpoint / "model.safetensors")
    for run, frozen in ((tmp_path / "seed-1", True), (sst2_run[0] / "seed-1", False)):
        after = load_file(run / "model.safetensors")
        encoder = [k for k in after if k.startswith("encoder.")]
        assert len(encoder) == len([k for k in before if k.startswith("encoder.")])
        same = all(torch.equal(after[k], before[k]) for k in encoder)
        assert same == frozen  # the full fine-tuning run changed it: the check can fail
        assert "classifier.weight" in after
    assert json.loads((tmp_path / "seed-1" / "metrics.json").read_text())["freeze"] is True


def test_glue_runs_every_task_present_and_prints_the_table(finetune_workspace, tmp_path, capsys):
    root, checkpoint, _, _ = finetune_workspace
    out = finetune(
        ["--task", "glue", "--data", str(root / "glue")]
        + ["--model", str(checkpoint), "--out", str(tmp_path), "--epochs", "1"]
        + TINY,
        capsys,
    )
    table = out.strip().splitlines()[-5:]
    assert table[0].split() == ["task", "metric", "dev", "seeds"]
    names = [row.split()[:2] for row in table[1:]]
    assert names == [
        ["sst2", "accuracy"],
        ["mnli-m", "accuracy"],
        ["mnli-mm", "accuracy"],
        ["rte", "accuracy"],
    ]
    rows = json.loads((tmp_path / "glue.json").read_text())
    assert [r["task"] for r in rows] == ["sst2", "mnli-m", "mnli-mm", "rte"]
    for row, line in zip(rows, table[1:], strict=True):
        assert line.split()[2] == f"{row['dev'][0]:.1f}" and 0 <= row["dev"][0] <= 100
    assert (tmp_path / "rte" / "seed-1" / "task.json").is_file()


def test_a_new_jsonl_dataset_needs_only_a_column_mapping(finetune_workspace, tmp_path, capsys):
    root, checkpoint, _, _ = finetune_workspace
    train, dev = root / "reviews" / "train.jsonl", root / "reviews" / "dev.jsonl"
    finetune(
        ["--task", "tabular", "--train-file", str(train), "--dev-file", str(dev)]
        + ["--text-a", "review", "--label-column", "stars"]
        + ["--model", str(checkpoint), "--out", str(tmp_path), "--epochs", "1"]
        + TINY,
        capsys,
    )
    task = json.loads((tmp_path / "seed-1" / "task.json").read_text())
    assert task["labels"] == ["neg", "pos"] and task["columns"]["text_a"] == "review"
    metrics = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())
    assert set(metrics["dev"]["dev"]) == {"accuracy", "f1", "mcc"}
    target = tmp_path / "reviews.tsv"
    args = ["predict", "--model", str(tmp_path / "seed-1"), "--input", str(dev)]
    assert main([*args, "--out", str(target)]) == 0
    rows = target.read_text().splitlines()
    assert len(rows) == 9 and all(r.split("\t")[1] in ("neg", "pos") for r in rows[1:])


class Squares:
    """A regression objective (loop contract) and an endless batch source for the loop test."""

    def __call__(self, model, batch):
        return {"mse": (model(batch["x"]).squeeze(-1) - batch["y"]).pow(2).sum()}

    def count_targets(self, batch):
        return {"mse": len(batch["y"])}

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randn(4, 2, generator=g)
            yield {"x": x, "y": x.sum(-1), "attention_mask": torch.ones(4)}

    def state_dict(self):
        return {}


def test_loop_keeps_the_best_model_and_stops_after_patience(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    scores, seen = iter([0.5, 0.7, 0.6, 0.65, 0.9]), {}

    def evaluate_fn(m):
        seen[len(seen) + 1] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"score": next(scores)}

    config = TrainConfig(
        max_steps=10,
        learning_rate=0.1,
        warmup_steps=0,
        eval_every=2,
        save_every=0,
        best_metric="score",
        early_stopping_patience=2,
    )
    result = train(
        model, Squares(), Squares(), config, tmp_path, config_dict={}, evaluate_fn=evaluate_fn
    )
    # evaluations at steps 2, 4 (best), 6 and 8 (two without a new best): stop at step 8
    assert result["stopped"] == "early_stopping" and result["step"] == 8
    assert result["best"] == {"step": 4, "value": 0.7}
    best = load_file(tmp_path / "best" / "model.safetensors")
    assert all(torch.equal(best[k], seen[2][k]) for k in best)
    assert not all(torch.equal(best[k], model.state_dict()[k]) for k in best)
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["event"] == "eval"]
    assert [(r["step"], r["score"]) for r in evals] == [(2, 0.5), (4, 0.7), (6, 0.6), (8, 0.65)]


def broken_glue(root, tmp_path, file, text):
    data = tmp_path / "glue"
    shutil.copytree(root / "glue", data)
    (data / "SST-2" / file).write_text(text)
    return data


@pytest.mark.parametrize(
    "file, text, message",
    [
        (
            "train.tsv",
            "sentence\tlabel\ngood film\t1\ngood\tfilm\t1\n",
            "SST-2/train.tsv:3: expected 2 tab-separated columns, found 3",
        ),
        ("dev.tsv", "sentence\tlabel\ngood film\t2\n", "SST-2/dev.tsv:2: unknown label '2'"),
        ("dev.tsv", "", "SST-2/dev.tsv:1: no examples in the file"),
    ],
)
def test_bad_glue_files_are_one_line_with_file_and_line(
    finetune_workspace, tmp_path, cli_error, file, text, message
):
    root, checkpoint, _, _ = finetune_workspace
    data = broken_glue(root, tmp_path, file, text)
    args = ["finetune", "--task", "sst2", "--data", str(data), "--model", str(checkpoint)]
    assert message in cli_error([*args, "--out", str(tmp_path / "out")])


def test_a_preset_needs_a_tokenizer(finetune_workspace, tmp_path, cli_error):
    args = ["finetune", "--task", "sst2", "--data", str(finetune_workspace[0] / "glue"), "--model"]
    message = cli_error([*args, "bert-mini", "--out", str(tmp_path)])
    assert "--model bert-mini starts from scratch: give --tokenizer DIR" in message


def test_a_tokenizer_of_another_vocabulary_is_refused(
    finetune_workspace, sst2_run, tmp_path, cli_error
):
    root, checkpoint, _, _ = finetune_workspace
    other = train_wordpiece(["zebras quietly graze on the plain"] * 5, min_frequency=1)
    other.save(tmp_path / "other")
    args = (
        ["finetune", "--task", "sst2", "--data", str(root / "glue")]
        + ["--model", str(checkpoint), "--tokenizer", str(tmp_path / "other")]
        + ["--out", str(tmp_path / "o")]
    )
    assert "different vocabularies" in cli_error(args)
    model = tmp_path / "model"
    shutil.copytree(sst2_run[0] / "seed-1", model)
    other.save(model)  # a fine-tuned directory whose tokenizer was swapped
    args = ["evaluate", "--model", str(model), "--data", str(root / "glue")]
    assert "different vocabularies" in cli_error(args)
