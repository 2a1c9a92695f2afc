"""Every score describes what was written: predictions from `predict` (and fine-tuning's dev
predictions) for SQuAD v1.1, SQuAD v2.0 at several --null-threshold values, a GLUE task and CoNLL,
from every model kind (fine-tuned BERT, frozen BERT, --downstream over ELMo and over random word
embeddings), rescored here by scorers written from the official scripts (evaluate-v1.1.py,
evaluate-v2.0.py, accuracy) and seqeval for entity F1, equal the scores `evaluate` printed and
wrote, and those in fine-tuning's metrics.json. The models are tiny and barely trained: the scores
need not be good, only true."""

import collections
import contextlib
import io
import json
import re
import string

import pytest
from conftest import BERT_TINY, ELMO_TINY
from seqeval.metrics import f1_score

from muppets.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the independent scorers


def normalize(text: str) -> str:
    """evaluate-v1.1.py / evaluate-v2.0.py normalize_answer."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(prediction: str, gold: str, v2: bool) -> float:
    pred, truth = normalize(prediction).split(), normalize(gold).split()
    if v2 and (not pred or not truth):  # evaluate-v2.0.py compute_f1
        return float(pred == truth)
    same = sum((collections.Counter(pred) & collections.Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def squad_scores(dataset: dict, predictions: dict, v2: bool) -> dict:
    """exact and f1 in percent over every question of the file."""
    exact = f1 = total = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                golds = [a["text"] for a in qa["answers"]]
                if v2:
                    golds = [g for g in golds if normalize(g)] or [""]
                prediction = predictions[qa["id"]]  # every question must be predicted
                exact += max(float(normalize(prediction) == normalize(g)) for g in golds)
                f1 += max(token_f1(prediction, g, v2) for g in golds)
    assert total == len(predictions)
    return {"exact": 100 * exact / total, "f1": 100 * f1 / total}


def glue_accuracy(dev_tsv, predictions_tsv) -> float:
    gold = [row.split("\t")[-1] for row in dev_tsv.read_text().splitlines()[1:] if row]
    rows = predictions_tsv.read_text().splitlines()
    assert rows[0] == "index\tprediction"
    predicted = dict(row.split("\t") for row in rows[1:])
    assert sorted(map(int, predicted)) == list(range(len(gold)))  # every row, once
    return sum(gold[i] == predicted[str(i)] for i in range(len(gold))) / len(gold)


def conll_f1(gold_file, predictions_file) -> float:
    """seqeval's entity F1 (conlleval's chunks) of the pred column against the gold file's."""
    gold, sentence = [], []
    for line in gold_file.read_text().splitlines() + [""]:
        if line.strip() and not line.startswith("-DOCSTART-"):
            sentence.append(line.split())
        elif sentence:
            gold.append(sentence)
            sentence = []
    blocks = predictions_file.read_text().strip("\n").split("\n\n")
    predicted = [[line.split() for line in block.splitlines()] for block in blocks]
    assert len(predicted) == len(gold)
    for words, truth in zip(predicted, gold, strict=True):
        assert [(w[0], w[1]) for w in words] == [(t[0], t[-1]) for t in truth]
    return f1_score([[t[-1] for t in s] for s in gold], [[w[2] for w in s] for s in predicted])


# ---------------------------------------------------------------- runs


def run(argv: list[str]) -> list[str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    precision, *printed = stdout.getvalue().splitlines()  # the arithmetic is said first
    assert precision.startswith("precision: ")
    return printed


BERT_TASKS = {  # name: (task flags, dev file relative to the workspace)
    "sst2": (["--task", "sst2", "--data", "glue"], "glue/SST-2/dev.tsv"),
    "conll": (["--task", "conll2003", "--data", "conll"], "conll/valid.txt"),
    "squad1": (["--task", "squad", "--train-file", "squad-v1.json"], "squad-v1.json"),
    "squad2": (["--task", "squad", "--train-file", "squad.json"], "squad.json"),
}
QA = ["--max-seq-length", "24", "--doc-stride", "6"]


@pytest.fixture(scope="module")
def bert_runs(finetune_workspace, tmp_path_factory):
    root, checkpoint, _, _ = finetune_workspace
    runs = {}
    for kind in ("finetuned", "frozen"):
        for name, (flags, dev) in BERT_TASKS.items():
            flags = [
                str(root / f) if f in ("glue", "conll") or f.endswith(".json") else f for f in flags
            ]
            if name.startswith("squad"):
                flags += ["--dev-file", str(root / dev), *QA]
            out = tmp_path_factory.mktemp(f"{kind}-{name}")
            freeze = ["--freeze"] if kind == "frozen" else []
            run(
                ["finetune", *flags, "--model", str(checkpoint), "--out", str(out)]
                + ["--epochs", "1", *BERT_TINY, *freeze]
            )
            runs[kind, name] = (out / "seed-1", root / dev)
    return runs


@pytest.fixture(scope="module")
def downstream_runs(elmo_workspace, tmp_path_factory):
    root, elmo = elmo_workspace
    runs = {}
    for features in ("elmo", "random-embeddings"):
        for name, task, data, dev in (
            ("sst2", "sst2", "glue", "glue/SST-2/dev.tsv"),
            ("conll", "conll2003", "conll", "conll/valid.txt"),
        ):
            out = tmp_path_factory.mktemp(f"{features}-{name}")
            model = str(elmo) if features == "elmo" else features
            run(
                ["finetune", "--task", task, "--data", str(root / data), "--model", model]
                + ["--downstream", "bilstm", "--out", str(out), "--epochs", "1", *ELMO_TINY]
            )
            runs[features, name] = (out / "seed-1", root / dev)
    return runs


def rescored(name: str, dev, predictions, threshold=None) -> dict:
    if name == "sst2":
        return {"accuracy": glue_accuracy(dev, predictions)}
    if name == "conll":
        return {"f1": conll_f1(dev, predictions)}
    answers = json.loads(predictions.read_text())
    return squad_scores(json.loads(dev.read_text()), answers, v2=name == "squad2")


def check(name, model, dev, tmp_path, extra=()) -> dict:
    """predict, evaluate, rescore: the evaluate scores (printed and in evaluate.json) must be the
    rescored ones of the predictions written with the same options."""
    out = tmp_path / ("p.json" if name.startswith("squad") else "p.txt")
    run(["predict", "--model", str(model), "--input", str(dev), "--out", str(out), *extra])
    printed = run(
        ["evaluate", "--model", str(model), "--file", str(dev), "--out", str(tmp_path)]
        + list(extra)
    )
    scores = json.loads((tmp_path / "evaluate.json").read_text())["file"]
    mine = rescored(name, dev, out)
    for metric, value in mine.items():
        assert scores[metric] == pytest.approx(value, abs=1e-9)
        assert f"{metric} {value:.4f}" in printed[0]
    return mine


BERT_CASES = [(kind, name) for kind in ("finetuned", "frozen") for name in BERT_TASKS]


@pytest.mark.parametrize("kind, name", BERT_CASES)
def test_bert_scores_are_those_of_the_written_predictions(bert_runs, kind, name, tmp_path):
    model, dev = bert_runs[kind, name]
    metrics = json.loads((model / "metrics.json").read_text())["dev"]["dev"]
    written = {"sst2": "dev_predictions.tsv", "conll": "dev_predictions.txt"}
    own = rescored(name, dev, model / written.get(name, "dev_predictions.json"))
    for metric, value in own.items():  # fine-tuning's dev score is its dev file's
        assert metrics[metric] == pytest.approx(value, abs=1e-9)
    if name != "squad2":
        assert check(name, model, dev, tmp_path) == pytest.approx(own, abs=1e-9)
        return
    seen = []
    for threshold in ("-1e6", "-0.05", "0", "0.05", "1e6"):
        where = tmp_path / threshold
        where.mkdir()
        seen.append(check(name, model, dev, where, [f"--null-threshold={threshold}"]))
        answers = json.loads((where / "p.json").read_text())
        if threshold == "-1e6":
            assert set(answers.values()) == {""}  # every question unanswered
        if threshold == "1e6":
            assert "" not in answers.values()  # every question answered
    # Nothing answered scores exactly the share of unanswerable questions (answered, each of
    # those is wrong; the two may still tie by chance, so that is not asserted).
    questions = [
        q for a in json.loads(dev.read_text())["data"] for p in a["paragraphs"] for q in p["qas"]
    ]
    unanswerable = sum(not q["answers"] for q in questions)
    assert 0 < unanswerable < len(questions)
    share = 100 * unanswerable / len(questions)
    assert seen[0] == pytest.approx({"exact": share, "f1": share}, abs=1e-9)


@pytest.mark.parametrize("features", ["elmo", "random-embeddings"])
@pytest.mark.parametrize("name", ["sst2", "conll"])
def test_downstream_scores_are_those_of_the_written_predictions(
    downstream_runs, features, name, tmp_path
):
    model, dev = downstream_runs[features, name]
    metrics = json.loads((model / "metrics.json").read_text())["dev"]["dev"]
    written = "dev_predictions.tsv" if name == "sst2" else "dev_predictions.txt"
    own = rescored(name, dev, model / written)
    for metric, value in own.items():
        assert metrics[metric] == pytest.approx(value, abs=1e-9)
    assert check(name, model, dev, tmp_path, ["--device", "cpu"]) == pytest.approx(own, abs=1e-9)
