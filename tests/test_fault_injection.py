"""kill -9 at seeded random moments (a checkpoint every step, so many kills land in a checkpoint
write), rerun after each (--resume once a checkpoint exists), ends bitwise equal to the run that
was never killed: the weights, the optimizer state and metrics.jsonl's train records."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.training.checkpoint import checkpoints

STEPS = 40
KILLS = 5


def argv(shards: Path, out: Path) -> list[str]:
    return [
        *("pretrain", "--train-data", str(shards / "train"), "--out", str(out)),
        *("--model", "bert-tiny", "--max-seq-length", "32", "--batch-size", "4"),
        *("--micro-batch-size", "2", "--partitions", "1", "--warmup-steps", "3"),
        *("--max-steps", str(STEPS), "--log-every", "1", "--save-every", "1"),
        *("--learning-rate", "1e-3", "--device", "cpu"),
    ]


def train_records(out: Path) -> list[dict]:
    """The train records without their clock readings (elapsed seconds, tokens per second)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    clock = ("elapsed_seconds", "tokens_per_second")
    return [
        {k: v for k, v in r.items() if k not in clock} for r in records if r["event"] == "train"
    ]


def logged(out: Path) -> int:
    """Train records so far (the file may end in a line being written)."""
    path = out / "metrics.jsonl"
    return path.read_text().count('"event": "train"') if path.exists() else 0


def final_state(out: Path) -> dict[str, torch.Tensor]:
    newest = checkpoints(out / "checkpoints")[-1]
    assert newest.name == f"step-{STEPS:08d}"
    state = load_file(newest / "model.safetensors")
    optimizer = load_file(newest / "optimizer.safetensors")  # AdamW's moments
    state.update({f"optimizer.{k}": v for k, v in optimizer.items()})
    return state


def test_killed_and_resumed_runs_end_bitwise_equal_to_one_run(tiny_shards, tmp_path, one_thread):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(argv(tiny_shards, straight)) == 0
    rng = random.Random(19)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for _ in range(KILLS):
        resume = ["--resume"] if checkpoints(killed / "checkpoints") else []
        command = [sys.executable, "-m", "muppets", *argv(tiny_shards, killed), *resume]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started = logged(killed)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:  # until a step is logged
            if logged(killed) > started:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))  # a step is ~30 ms, a checkpoint write about as long
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
    assert kills >= 3
    resume = ["--resume"] if checkpoints(killed / "checkpoints") else []
    assert main([*argv(tiny_shards, killed), *resume]) == 0
    expected, got = final_state(straight), final_state(killed)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
    assert train_records(killed) == train_records(straight)
