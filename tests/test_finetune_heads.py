"""Fine-tuning a tiny random BERT (conftest.py) beyond sentence classification: SQuAD v1.1 and
v2.0 windows and answers, CoNLL NER's word gold pred lines, every head's batched predictions equal
to one at a time, and bad SQuAD and CoNLL files named with their line."""

import json
import shutil

import pytest
import torch
from conftest import BERT_TINY as TINY
from conftest import finetune_bert as finetune

from muppets.cli.main import main
from muppets.models.registry import build_encoder
from muppets.tasks.prediction import predict
from muppets.tasks.registry import build_head, task_spec
from muppets.tasks.setup import TaskSetup

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("v2", [True, False])
def test_squad_fine_tunes_and_predicts_answers(finetune_workspace, tmp_path, capsys, v2):
    root, checkpoint, _, _ = finetune_workspace
    squad = str(root / ("squad.json" if v2 else "squad-v1.json"))
    finetune(
        ["--task", "squad", "--train-file", squad, "--dev-file", squad]
        + ["--model", str(checkpoint), "--out", str(tmp_path), "--epochs", "1"]
        + ["--max-seq-length", "24", "--doc-stride", "6", *TINY],
        capsys,
    )
    metrics = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())
    assert metrics["metric"] == "f1" and metrics["train_features"] > 7  # several windows each
    dev = metrics["dev"]["dev"]
    if v2:
        assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"} <= set(dev)
    else:
        assert set(dev) == {"exact", "f1", "total", "missing"} and dev["missing"] == 0
    ids = {f"q{k}" for k in range(6)} | ({"q-none"} if v2 else set())
    assert dev["total"] == len(ids)
    assert set(json.loads((tmp_path / "seed-1" / "dev_predictions.json").read_text())) == ids
    assert json.loads((tmp_path / "seed-1" / "task.json").read_text())["squad_v2"] is v2
    target = tmp_path / "predictions.json"
    args = ["predict", "--model", str(tmp_path / "seed-1"), "--input", squad, "--out"]
    assert main([*args, str(target)]) == 0
    answers = json.loads(target.read_text())
    assert set(answers) == ids and all(isinstance(a, str) for a in answers.values())


def test_conll_ner_writes_word_gold_pred_lines(finetune_workspace, tmp_path, capsys):
    root, checkpoint, _, _ = finetune_workspace
    finetune(
        ["--task", "conll2003", "--data", str(root / "conll")]
        + ["--model", str(checkpoint), "--out", str(tmp_path), "--epochs", "1"]
        + TINY,
        capsys,
    )
    dev = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())["dev"]["dev"]
    assert {"precision", "recall", "f1", "per_type", "words_unpredicted"} <= set(dev)
    target = tmp_path / "test.out"
    test = root / "conll" / "test.txt"
    args = ["predict", "--model", str(tmp_path / "seed-1"), "--input", str(test)]
    assert main([*args, "--out", str(target)]) == 0
    lines = target.read_text().splitlines()
    tokens = [line.split() for line in test.read_text().splitlines()[2:]] + [[]]
    assert len(lines) == len(tokens) == 8 * 6  # a blank line after each sentence
    for got, want in zip(lines, tokens, strict=True):
        assert got.split()[:2] == ([want[0], want[-1]] if want else [])
        assert not want or got.split()[2] in task_spec("conll2003").labels


@pytest.mark.parametrize("head", ["classification", "regression", "span_qa", "tagging"])
def test_batched_predictions_equal_one_at_a_time(finetune_workspace, head):
    root, _, tokenizer, config = finetune_workspace
    task = {
        "classification": "rte",
        "regression": "tabular-regression",
        "span_qa": "squad",
        "tagging": "conll2003",
    }[head]
    spec = task_spec(task)
    labels = list(spec.labels) if head != "regression" else []
    setup = TaskSetup(
        task,
        head,
        labels,
        24,
        pooling="mean",
        doc_stride=6,
        columns={"text_a": "sentence1", "text_b": "sentence2", "label": "index"},
    )
    path = {
        "rte": root / "glue" / "RTE" / "dev.tsv",
        "tabular-regression": root / "glue" / "RTE" / "dev.tsv",
        "squad": root / "squad.json",
        "conll2003": root / "conll" / "valid.txt",
    }[task]
    examples = setup.read(path, "dev")
    features = setup.featurize(examples, tokenizer)
    torch.manual_seed(1)
    model = build_head(spec, build_encoder(config), max(1, len(labels)), pooling="mean").eval()
    batched, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size=64)
    alone, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size=1)
    if head == "regression":
        torch.testing.assert_close(torch.tensor(batched), torch.tensor(alone), rtol=0, atol=1e-5)
        assert len(set(batched.round(4).tolist())) > 1  # not a constant output
    elif head == "classification":
        assert batched.tolist() == alone.tolist()
    else:
        assert batched == alone
    if head == "span_qa":
        assert len(features) > len(examples)  # several windows per question


def test_bad_squad_and_conll_files_name_file_and_line(finetune_workspace, tmp_path, cli_error):
    root, checkpoint, _, _ = finetune_workspace
    bad = tmp_path / "train.json"
    bad.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    args = (
        ["finetune", "--task", "squad", "--train-file", str(bad)]
        + ["--dev-file", str(root / "squad.json"), "--model", str(checkpoint)]
        + ["--out", str(tmp_path / "o")]
    )
    assert f"{bad}:2: invalid JSON" in cli_error(args)
    conll = tmp_path / "conll"
    shutil.copytree(root / "conll", conll)
    lines = (conll / "train.txt").read_text().splitlines()
    lines[4] = "to"  # the tag column is missing
    (conll / "train.txt").write_text("\n".join(lines))
    args = ["finetune", "--task", "conll2003", "--data", str(conll), "--model", str(checkpoint)]
    args += ["--out", str(tmp_path / "o2")]
    assert f"{conll / 'train.txt'}:5: expected at least 2" in cli_error(args)
