"""Messages that name the option at fault: a missing --train-data names train_data (not "no
tokenizer here"), --batch-size 0 names batch_size (not gradient_accumulation_steps), and
finetune --errors reaches the task readers."""

import pytest

from muppets.cli.main import main


def one_line_error(capsys, argv, printed: str = "") -> str:
    """The one stderr line of a failed command; `printed` must be in its stdout."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert printed in out
    return err.strip()


@pytest.mark.parametrize("command", ["pretrain", "pretrain-elmo"])
def test_a_missing_train_data_names_the_option(tmp_path, capsys, command):
    missing = tmp_path / "nope"
    err = one_line_error(capsys, [command, "--train-data", str(missing), "--out", str(tmp_path)])
    assert err.startswith(f"muppets: error: train_data {missing}: no such ")


def test_a_directory_not_from_prepare_names_train_data_and_the_manifest(tmp_path, capsys):
    argv = ["pretrain", "--train-data", str(tmp_path), "--out", str(tmp_path / "run")]
    err = one_line_error(capsys, argv)
    assert err.startswith(f"muppets: error: train_data {tmp_path}: no manifest.json here")


@pytest.mark.parametrize("command", ["pretrain", "pretrain-elmo"])
def test_batch_size_zero_names_batch_size(tmp_path, capsys, command):
    argv = [command, "--train-data", "x", "--batch-size", "0", "--out", str(tmp_path)]
    assert one_line_error(capsys, argv) == "muppets: error: batch_size must be >= 1, got 0"


def test_finetune_errors_replace_reads_latin1_bytes(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_bytes("Caf\xe9 B-ORG\nrejects O\n\n".encode("latin-1"))
    dev = tmp_path / "missing.txt"
    argv = ["finetune", "--task", "conll2003", "--model", "random-embeddings"]
    argv += ["--downstream", "bilstm", "--train-file", str(train), "--dev-file", str(dev)]
    argv += ["--out", str(tmp_path / "run")]
    err = one_line_error(capsys, argv)
    assert err.startswith(f"muppets: error: {train}:1: byte 4 of the line (0xe9) is not UTF-8")
    # replaced and counted: reading goes on to the dev file, which is missing
    replaced = f"{train}: 1 lines with bytes that are not UTF-8 (replaced)"
    argv = [*argv[:-1], str(tmp_path / "run2"), "--errors", "replace"]
    assert one_line_error(capsys, argv, replaced) == f"muppets: error: {dev}: no such file"
    bad = one_line_error(capsys, [*argv, "--errors", "ignore"])
    assert bad == "muppets: error: errors must be strict or replace, got 'ignore'"
