"""End-to-end recipe speed against an earlier commit: did a refactor slow the loop or the recipes?

The kernels have their own benches (pretrain_throughput.py, finetune_throughput.py); this one runs
the whole commands, loop and data pipeline included, of this tree and of COMMIT (checked out once
as a git worktree beside the repository's temporary files) on the same prepared shards and the
same SST-2 sample, interleaved round by round, and prints the loop's own throughput for each:

  pretrain   `muppets pretrain`, bert-tiny, MLM + NSP, STEPS steps of 32 x 128 tokens
  finetune   `muppets finetune --task sst2`, bert-tiny from scratch, one epoch of the sample

    .venv/bin/python bench/against_commit.py --commit af80bf0 [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "muppets" / "samples"


def checkout(commit: str) -> Path:
    """A worktree of `commit` (reused when it is already there)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"muppets-{sha}"
    if not (tree / "muppets").is_dir():
        subprocess.run(["git", "worktree", "add", "-f", str(tree), sha], cwd=ROOT, check=True)
    return tree


def muppets(tree: Path, *args: str, threads: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(
        [sys.executable, "-m", "muppets", *args], env=env, check=True, capture_output=True
    )


def pretrain_speed(tree: Path, shards: Path, out: Path, steps: int, threads: int) -> float:
    """Real tokens per second of the training loop (result.json)."""
    shutil.rmtree(out, ignore_errors=True)
    muppets(
        tree,
        "pretrain",
        "--train-data",
        str(shards),
        "--out",
        str(out),
        "--model",
        "bert-tiny",
        "--max-steps",
        str(steps),
        "--warmup-steps",
        "0",
        "--batch-size",
        "32",
        "--micro-batch-size",
        "32",
        "--log-every",
        "10",
        "--save-every",
        "0",
        "--seed",
        "1",
        threads=threads,
    )
    result = json.loads((out / "result.json").read_text())
    return result["tokens_seen"] / result["elapsed_seconds"]


def finetune_speed(tree: Path, tokenizer: Path, out: Path, threads: int) -> float:
    """Training examples per second of one epoch (metrics.json's loop seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    muppets(
        tree,
        "finetune",
        "--task",
        "sst2",
        "--train-file",
        str(SAMPLES / "SST-2" / "train.tsv"),
        "--dev-file",
        str(SAMPLES / "SST-2" / "dev.tsv"),
        "--model",
        "bert-tiny",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--seeds",
        "1",
        threads=threads,
    )
    metrics = json.loads((out / "seed-1" / "metrics.json").read_text())
    return 6000 / metrics["elapsed_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", required=True, help="the earlier commit to compare with")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    trees = {"this tree": ROOT, args.commit: checkout(args.commit)}
    work = Path(tempfile.mkdtemp(prefix="against-commit-"))
    train_text = str(SAMPLES / "wiki.train.txt")
    muppets(
        ROOT,
        "tokenizer",
        "train",
        "--inputs",
        train_text,
        "--out",
        str(work / "tok"),
        "--vocab-size",
        "8000",
        threads=args.threads,
    )
    muppets(
        ROOT,
        "prepare",
        "--inputs",
        train_text,
        "--tokenizer",
        str(work / "tok"),
        "--out",
        str(work / "shards"),
        threads=args.threads,
    )
    speeds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):  # interleaved: a busier minute slows both alike
        for name, tree in trees.items():
            out = work / "runs"
            p = pretrain_speed(tree, work / "shards", out / "pretrain", args.steps, args.threads)
            f = finetune_speed(tree, work / "tok", out / "finetune", args.threads)
            speeds.setdefault(("pretrain tokens/s", name), []).append(p)
            speeds.setdefault(("finetune examples/s", name), []).append(f)
    print(f"| work | {args.commit} | this tree | ratio |\n| --- | --- | --- | --- |")
    for work_name in ("pretrain tokens/s", "finetune examples/s"):
        old = statistics.median(speeds[(work_name, args.commit)])
        new = statistics.median(speeds[(work_name, "this tree")])
        print(f"| {work_name} | {old:,.0f} | {new:,.0f} | {new / old:.3f}x |")
    print(f"(median of {args.rounds} interleaved rounds, {args.threads} thread(s))")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
