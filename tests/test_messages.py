"""Messages that say what happened: label sets with counts, a test file used as dev, counted
SQuAD offset repairs instead of Python warnings, labelled files told by their columns, a failed
convert that leaves nothing, old --downstream models refused in one line, --errors reaching the
task readers, and early stopping only when steps were left."""

import json
import warnings

import pytest

from muppets.cli.main import main
from muppets.data.readers.tabular import Example
from muppets.errors import InputError
from muppets.recipes.finetune.seeds import stop_reason
from muppets.tasks.registry import find_test_file, has_labels, label_counts, read_split, task_spec


def test_the_label_set_is_printed_with_counts_per_split():
    def examples(*labels):
        return [Example("t", None, label, f"x-{n}", "f", n) for n, label in enumerate(labels)]

    splits = {"train": examples(0, 1, 1, 2), "dev": examples(1, 1)}
    line = label_counts(["neg", "pos", "1"], splits)
    assert line == "labels: neg (train 1, dev 0), pos (train 2, dev 2), 1 (train 1, dev 0)"


def conll(tmp_path, names=("train.txt", "valid.txt", "test.txt")):
    for name in names:
        (tmp_path / name).write_text("EU B-ORG\nrejects O\n\n", encoding="utf-8")
    return tmp_path


def test_the_test_file_is_found_and_a_test_file_as_dev_is_warned(tmp_path, capsys):
    spec = task_spec("conll2003")
    data = conll(tmp_path)
    assert find_test_file(spec, data, {"dev": data / "valid.txt"}) == {"test": data / "test.txt"}
    assert capsys.readouterr().out == ""
    assert find_test_file(spec, data, {"dev": data / "test.txt"}) == {}
    assert capsys.readouterr().out == (
        f"warning: {data / 'test.txt'} is a test file used as the dev file: the best model is "
        "picked on it, so its score is not a held-out score\n"
    )
    assert find_test_file(spec, conll(tmp_path / ".", ("train.txt",)) / "none", {}) == {}


def test_squad_offset_repairs_are_one_counted_line_not_python_warnings(tmp_path, capsys):
    context = "The cat sat. The cat ran."
    answers = [[{"text": "cat", "answer_start": n}] for n in (1, 2, 15)]
    qas = [{"id": f"q{n}", "question": "Who?", "answers": a} for n, a in enumerate(answers)]
    document = {"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        examples = read_split(task_spec("squad"), path, "dev")
    assert len(examples) == 3
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: 3 answer offsets repaired, 0 answers dropped (first: ")
    assert out.count("\n") == 1


def test_errors_replace_reaches_the_task_readers(tmp_path, capsys):
    path = tmp_path / "train.txt"
    path.write_bytes("Caf\xe9 B-ORG\nrejects O\n\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        read_split(task_spec("conll2003"), path, "train")
    sentences = read_split(task_spec("conll2003"), path, "train", errors="replace")
    assert sentences[0].words == ["Caf\ufffd", "rejects"]
    assert capsys.readouterr().out == f"{path}: 1 lines with bytes that are not UTF-8 (replaced)\n"


@pytest.mark.parametrize(
    "task, first_line, labelled",
    [
        ("sst2", "sentence\tlabel", True),
        ("sst2", "index\tsentence", False),
        ("cola", "gj04\t1\t\tOur friends won't buy this analysis.", True),
        ("cola", "index\tsentence", False),
        ("mnli", "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label", True),
        ("mnli", "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2", False),
    ],
)
def test_predict_tells_labelled_files_by_their_columns_not_their_names(
    tmp_path, task, first_line, labelled
):
    path = tmp_path / "test_set.tsv"  # the name says test; the columns decide
    path.write_text(first_line + "\n", encoding="utf-8")
    assert has_labels(task_spec(task), path) is labelled


def test_a_failed_convert_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "--input", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert main(["convert", "--input", str(tmp_path / "missing"), "--out", str(kept)]) == 2
    assert (kept / "notes.txt").read_text() == "mine"  # a folder that was there stays
    assert not (kept / "model.safetensors").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_an_old_downstream_model_is_refused_in_one_line(tmp_path, capsys, command):
    """A --downstream run written before task.json was: its model cannot be rebuilt."""
    run = tmp_path / "run"
    (run / "seed-1").mkdir(parents=True)
    (run / "seed-1" / "config.json").write_text(json.dumps({"model_type": "downstream"}))
    (run / "summary.json").write_text(json.dumps({"best_seed": 1}))
    data = conll(tmp_path)
    where = ["--file", str(data / "valid.txt")]
    if command == "predict":
        where = ["--input", str(data / "valid.txt"), "--out", str(tmp_path / "p.txt")]
    assert main([command, "--model", str(run), *where]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a --downstream model without task.json" in err
    assert "metrics.json" in err


def test_early_stopping_is_not_reported_when_every_step_ran():
    assert stop_reason({"stopped": "early_stopping", "step": 8}, 8) == "max_steps"
    assert stop_reason({"stopped": "early_stopping", "step": 6}, 8) == "early_stopping"
    assert stop_reason({"stopped": "time_budget", "step": 8}, 8) == "time_budget"
