"""`muppets evaluate` and `predict` on `finetune --downstream` models (downstream_model.py): each
kind of features (ELMo, random embeddings, both) and of task (sentences, pairs, tags) loads
from its run directory, predicts exactly what fine-tuning wrote for dev and scores what
fine-tuning scored; a biLM that moved or changed is one line with exit 2."""

import json
import shutil

import pytest
from conftest import ELMO_TINY as TINY
from conftest import finetune_elmo as finetune

from muppets.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

RUNS = {  # name: (task, data folder, model, downstream, extra flags)
    "elmo-sst2": ("sst2", "glue", "elmo", "bilstm", []),
    "words-rte": ("rte", "glue", "random-embeddings", "bag-of-embeddings", []),
    "both-rte": ("rte", "glue", "elmo", "bilstm", ["--elmo-word-embeddings"]),
    "elmo-conll": ("conll2003", "conll", "elmo", "bag-of-embeddings", []),
    "words-conll": ("conll2003", "conll", "random-embeddings", "bilstm", []),
}


@pytest.fixture(scope="module")
def runs(elmo_workspace, tmp_path_factory):
    """One short fine-tuning of each kind (the scores need not be good, only reproduced)."""
    root, elmo = elmo_workspace
    out = {}
    for name, (task, folder, model, kind, extra) in RUNS.items():
        run = tmp_path_factory.mktemp(name)
        code, _ = finetune(
            ["--task", task, "--data", str(root / folder)]
            + ["--model", str(elmo) if model == "elmo" else model]
            + ["--downstream", kind, "--out", str(run), "--epochs", "1", *TINY, *extra]
        )
        assert code == 0
        out[name] = run
    return out


def dev_file(root, task):
    return {
        "sst2": root / "glue" / "SST-2" / "dev.tsv",
        "rte": root / "glue" / "RTE" / "dev.tsv",
        "conll2003": root / "conll" / "valid.txt",
    }[task]


@pytest.mark.parametrize("name", list(RUNS))
def test_predict_writes_what_finetuning_wrote_for_dev(runs, elmo_workspace, name, tmp_path):
    root, task = elmo_workspace[0], RUNS[name][0]
    out = tmp_path / ("p.txt" if task == "conll2003" else "p.tsv")
    argv = ["predict", "--model", str(runs[name]), "--input", str(dev_file(root, task))]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    written = "dev_predictions.txt" if task == "conll2003" else "dev_predictions.tsv"
    assert out.read_text() == (runs[name] / "seed-1" / written).read_text()


@pytest.mark.parametrize("name", list(RUNS))
def test_evaluate_scores_what_finetuning_scored(runs, elmo_workspace, name, tmp_path, capsys):
    root, (task, folder, *_) = elmo_workspace[0], RUNS[name]
    argv = ["evaluate", "--model", str(runs[name]), "--data", str(root / folder)]
    assert main([*argv, "--out", str(tmp_path), "--device", "cpu"]) == 0
    precision, *printed = capsys.readouterr().out.splitlines()  # the arithmetic, then scores
    assert precision.startswith("precision: ")
    scores = json.loads((tmp_path / "evaluate.json").read_text())
    metrics = json.loads((runs[name] / "seed-1" / "metrics.json").read_text())
    assert scores["dev"] == metrics["dev"]["dev"]
    if task == "conll2003":  # the test file is there: both paths score it
        assert scores["test"] == metrics["test"] and len(printed) == 2
    metric = {"sst2": "accuracy", "rte": "accuracy", "conll2003": "f1"}[task]
    assert f"{metric} {scores['dev'][metric]:.4f}" in printed[0]


def test_a_bilm_that_moved_or_changed_is_one_line(runs, elmo_workspace, tmp_path, cli_error):
    root, elmo = elmo_workspace
    run = tmp_path / "run"
    shutil.copytree(runs["elmo-sst2"] / "seed-1", run)
    config = json.loads((run / "config.json").read_text())
    config["elmo_checkpoint"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(config))
    argv = ["evaluate", "--model", str(run), "--file", str(dev_file(root, "sst2"))]
    assert "the frozen biLM this model was trained over is not there" in cli_error(argv)
    changed = tmp_path / "changed"
    shutil.copytree(elmo, changed)
    elmo_config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**elmo_config, "cell_dim": 128}))
    config["elmo_checkpoint"] = str(changed)
    (run / "config.json").write_text(json.dumps(config))
    assert "config differs from the one" in cli_error(argv)
