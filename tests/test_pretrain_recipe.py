"""`muppets pretrain` end to end on the bundled sample: run, resume, presets, input errors."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from muppets.cli.args import add_config_flags, build_config
from muppets.cli.main import main
from muppets.recipes.pretrain import PretrainConfig
from muppets.training.budget import parse_duration
from muppets.training.checkpoint import checkpoints

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "muppets" / "samples"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A 2,000-token WordPiece vocabulary and train/valid shards of the bundled sample."""
    root = tmp_path_factory.mktemp("pretrain")
    tok = str(root / "tok")
    assert (
        main(
            ["tokenizer", "train", "--inputs", str(SAMPLE / "wiki.train.txt")]
            + ["--out", tok, "--vocab-size", "2000"]
        )
        == 0
    )
    for split in ("train", "valid"):
        args = ["prepare", "--inputs", str(SAMPLE / f"wiki.{split}.txt"), "--tokenizer", tok]
        assert main([*args, "--out", str(root / split)]) == 0
    return root


def pretrain_args(shards, out, *extra):
    return [
        "pretrain",
        *("--train-data", str(shards / "train"), "--valid-data", str(shards / "valid")),
        *("--out", str(out), "--model", "bert-tiny", "--max-seq-length", "64"),
        *("--batch-size", "8", "--micro-batch-size", "4", "--partitions", "2"),
        *("--warmup-steps", "2", "--log-every", "2", "--eval-every", "0", "--save-every", "3"),
        *("--eval-instances", "16", "--learning-rate", "1e-3"),
        *extra,
    ]


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(checkpoints(run / "checkpoints")[-1] / "model.safetensors")


def test_interrupted_and_resumed_equals_straight_through(shards, tmp_path, capsys):
    torch.set_num_threads(1)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(pretrain_args(shards, straight, "--max-steps", "6")) == 0
    assert main(pretrain_args(shards, resumed, "--max-steps", "3")) == 0
    assert main(pretrain_args(shards, resumed, "--max-steps", "6", "--resume")) == 0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    result = json.loads((straight / "result.json").read_text())
    assert result["step"] == 6 and set(result["eval"]) >= {"mlm_accuracy", "nsp_accuracy"}
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == [2, 4, 6]
    assert (straight / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (straight / "pretrain.toml").exists()
    # a checkpoint carries its tokenizer and loads for fill-mask
    capsys.readouterr()
    assert main(["predict", "fill-mask", "--model", str(straight), "the [MASK] of it"]) == 0
    assert capsys.readouterr().out.count("[MASK] #1:") == 1


def test_two_processes_equal_one_with_the_same_global_batch(shards, tmp_path):
    """torchrun, gloo: 2 ranks x 1 micro-batch of 4 == 1 rank x 2 micro-batches of 4."""
    import os
    import socket
    import subprocess
    import sys

    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--max-steps", "3", "--dropout", "0.0"]
    assert main(pretrain_args(shards, one, *common)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = [*torchrun, "--master_addr", "127.0.0.1", "--master_port", port, "-m", "muppets"]
    done = subprocess.run(
        [*command, *pretrain_args(shards, two, *common)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("muppets: error: ")
    return err[0]


def test_resume_with_another_model_config_is_refused(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(shards, run, "--max-steps", "3")) == 0
    capsys.readouterr()
    code = main(pretrain_args(shards, run, "--max-steps", "6", "--resume", "--pre-layer-norm"))
    assert code == 2 and "pre_layer_norm" in one_error_line(capsys)


def test_missing_shard_is_one_clear_line(shards, tmp_path, capsys):
    import shutil

    broken = tmp_path / "train"
    shutil.copytree(shards / "train", broken)
    (broken / "shard-00000-tokens.bin").unlink()
    args = pretrain_args(shards, tmp_path / "run", "--max-steps", "2")
    args[args.index(str(shards / "train"))] = str(broken)
    assert main(args) == 2
    assert "shard-00000-tokens.bin" in one_error_line(capsys)


def test_unknown_preset_lists_the_valid_ones(shards, tmp_path, capsys):
    assert main(pretrain_args(shards, tmp_path / "run", "--model", "bert-huge")) == 2
    assert "bert-mini" in one_error_line(capsys)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, PretrainConfig)
    config = build_config(PretrainConfig, parser.parse_args(["--config", str(path)]))
    config.train_config(config.data_config().accumulation_steps(1))  # raises on a bad value


def test_durations():
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90 and parse_duration("45s") == 45


def test_held_out_masking_rate_can_differ_from_training(shards):
    from muppets.data.pretraining import SpecialIds, evaluation_batches
    from muppets.data.shards import ShardedCorpus
    from muppets.tokenization.wordpiece import load_tokenizer

    base = dict(train_data=str(shards / "train"), max_seq_length=64)
    trained_high = PretrainConfig(**base, masked_lm_prob=0.4, max_predictions_per_seq=26)
    assert trained_high.eval_data_config() == trained_high.data_config()
    judged_at_bert = PretrainConfig(**base, masked_lm_prob=0.4, eval_masked_lm_prob=0.15)
    held_out = judged_at_bert.eval_data_config()
    assert (held_out.masked_lm_prob, held_out.max_predictions_per_seq) == (0.15, 10)  # ceil(9.6)
    assert judged_at_bert.data_config().masked_lm_prob == 0.4

    t = load_tokenizer(shards / "train")
    ids = SpecialIds(t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.vocab_size)
    valid = ShardedCorpus(shards / "valid")
    for config, prob, cap in ((trained_high, 0.4, 26), (judged_at_bert, 0.15, 10)):
        batch = evaluation_batches(valid, config.eval_data_config(), ids, max_instances=8)[0]
        lengths = batch["attention_mask"].sum(1).tolist()
        expected = [min(cap, max(1, round(n * prob))) for n in lengths]  # google's rule
        assert batch["labels"].ne(-100).sum(1).tolist() == expected


def test_second_phase_starts_from_the_first_phases_weights(shards, tmp_path, capsys):
    """BERT's two phases: short sequences, then longer ones from those weights (fresh optimizer).
    Adam's first step moves no weight by more than the learning rate (|g| / (|g| + eps) < 1, plus
    a weight decay of lr * 0.01 * |w|), so one step after loading every weight is within 1e-3 of the
    first phase's; a fresh start is not."""
    torch.set_num_threads(1)
    first, second, fresh = tmp_path / "first", tmp_path / "second", tmp_path / "fresh"
    assert main(pretrain_args(shards, first, "--max-steps", "3", "--max-seq-length", "32")) == 0
    one_step = ("--max-steps", "1", "--warmup-steps", "0")
    assert main(pretrain_args(shards, second, *one_step, "--init-from", str(first))) == 0
    assert main(pretrain_args(shards, fresh, *one_step, "--seed", "1")) == 0
    a, b, c = weights(first), weights(second), weights(fresh)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-3 * (1 + 1e-3)
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-2
    capsys.readouterr()
    other = pretrain_args(shards, tmp_path / "other", *one_step, "--init-from", str(first))
    assert main([*other, "--pre-layer-norm"]) == 2
    assert "pre_layer_norm (checkpoint False, now True)" in one_error_line(capsys)
