"""What a resume says, in one line each: another learning rate or seed than the run's, a damaged
newest checkpoint with an older one still there (and the flag to use it), and --resume-from, which
continues from a named checkpoint and moves the newer ones aside. Also one line for a pickle that
would run code, and for a garbage shard index."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.data.shards import ShardedCorpus, shard_file
from muppets.errors import InputError
from muppets.models.hf import load_hf_checkpoint
from muppets.training.checkpoint import checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


def run_args(shards, out, *extra):
    return [
        *("pretrain", "--train-data", str(shards / "train"), "--out", str(out)),
        *("--model", "bert-tiny", "--max-seq-length", "32", "--batch-size", "4"),
        *("--micro-batch-size", "4", "--partitions", "1", "--warmup-steps", "0"),
        *("--log-every", "1", "--eval-every", "0", "--save-every", "1", "--max-steps", "3"),
        *extra,
    ]


@pytest.fixture(scope="module")
def three_steps(tiny_shards, tmp_path_factory):
    """A 3-step run with a checkpoint every step (step 1 rotated away: 2 and 3 are kept)."""
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(run_args(tiny_shards, out)) == 0
    return out


def test_the_changed_options_are_one_printed_line(tiny_shards, three_steps, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(three_steps, out)
    capsys.readouterr()
    argv = run_args(tiny_shards, out, "--resume", "--max-steps", "4", "--learning-rate", "2e-4")
    assert main([*argv, "--seed", "7"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resume")]
    step = out / "checkpoints" / "step-00000003"
    assert lines == [
        f"resume: step 3 of {step} with max_steps 3 -> 4, learning_rate 0.0001 -> 0.0002, "
        "seed 0 -> 7"
    ]


def test_an_unchanged_resume_prints_no_resume_line(tiny_shards, three_steps, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(three_steps, out)
    capsys.readouterr()
    assert main(run_args(tiny_shards, out, "--resume")) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "resume:" in line]


def test_a_damaged_newest_checkpoint_names_the_older_one(
    tiny_shards, three_steps, tmp_path, cli_error
):
    out = tmp_path / "r"
    shutil.copytree(three_steps, out)
    newest, older = checkpoints(out / "checkpoints")[-1], checkpoints(out / "checkpoints")[-2]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    error = cli_error(run_args(tiny_shards, out, "--resume", "--max-steps", "4"))
    assert str(weights) in error
    assert error.endswith(
        f"; the older checkpoint {older} is still there: add --resume-from {older} to continue "
        "from it"
    )


def test_resume_from_a_named_checkpoint_moves_the_newer_aside(
    tiny_shards, three_steps, tmp_path, capsys
):
    """From step 2 to 3 again: the same weights as the straight run's step 3."""
    out = tmp_path / "r"
    shutil.copytree(three_steps, out)
    step2, step3 = out / "checkpoints" / "step-00000002", out / "checkpoints" / "step-00000003"
    capsys.readouterr()
    assert main(run_args(tiny_shards, out, "--resume-from", str(step2))) == 0
    aside = out / "checkpoints-after-00000002"
    assert f"resume: 1 newer checkpoint(s) moved to {aside}" in capsys.readouterr().out
    again, first = (
        load_file(step3 / "model.safetensors"),
        load_file(aside / step3.name / "model.safetensors"),
    )
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in again)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]  # step 3 logged once


def test_resume_from_a_checkpoint_of_another_run_is_refused(
    tiny_shards, three_steps, tmp_path, cli_error
):
    out = tmp_path / "r"
    shutil.copytree(three_steps, out)
    other = three_steps / "checkpoints" / "step-00000002"
    error = cli_error(run_args(tiny_shards, out, "--resume-from", str(other)))
    assert error == (
        f"muppets: error: {other}: not a checkpoint of the run in {out} "
        "(it has step-00000002, step-00000003)"
    )


def test_a_pickle_that_would_run_code_is_refused_in_one_line(three_steps, tmp_path, cli_error):
    """GLOBAL posix.getcwd, called on load: torch's refusal is several lines and suggests
    weights_only=False; ours is one line and does not."""
    hf = tmp_path / "hf"
    step = checkpoints(three_steps / "checkpoints")[-1]
    assert main(["convert", "--input", str(step), "--out", str(hf), "--to", "hf"]) == 0
    (hf / "model.safetensors").unlink()
    (hf / "pytorch_model.bin").write_bytes(b"\x80\x02cposix\ngetcwd\n)R.")
    with pytest.raises(InputError) as error:
        load_hf_checkpoint(hf)
    message = str(error.value)
    assert message == (
        f"{hf / 'pytorch_model.bin'}: refused: this pickle holds more than tensors "
        "(posix.getcwd) and loading it could run code; save the weights as model.safetensors "
        "from a copy you trust"
    )
    line = cli_error(
        ["convert", "--input", str(hf), "--out", str(tmp_path / "m"), "--to", "muppets"]
    )
    assert line == f"muppets: error: {message}"


def test_a_garbage_sentence_index_names_its_file(tiny_shards, tmp_path):
    shards = shutil.copytree(tiny_shards / "valid", tmp_path / "valid")
    index = shard_file(shards, 0, "sentences")
    garbage = np.random.default_rng(0).integers(-(2**40), 2**40, index.stat().st_size // 8)
    garbage.astype("<i8").tofile(index)
    with pytest.raises(InputError) as error:
        ShardedCorpus(shards)
    assert str(error.value).startswith(f"{index}: sentence offsets start at ")
