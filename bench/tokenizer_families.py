"""Tokenizer training and `prepare` with byte-level BPE and Unigram, against bare `tokenizers`.

    .venv/bin/python bench/tokenizer_families.py [--files NAME ...] [--rounds 3] [--threads 1]
        [--memory]

Per kind (bpe, unigram), four runs, timed in this one process and interleaved round by round so
that a change in the machine's load hits ours and the ceiling alike:
  train ceiling    Tokenizer.train(files, trainer): the Rust trainer reading the files itself,
                   the same pipeline and trainer settings as ours (markup lines included)
  muppets train    train_tokenizer (`muppets tokenizer train --kind`): Python reads the files,
                   drops WikiExtractor markup, streams paragraphs into the same trainer, saves
  encode ceiling   the tokenizer loaded and the non-empty body lines read into memory first
                   (untimed), then only Tokenizer.encode_batch_fast(lines), 8192 lines a call
  muppets prepare  prepare_corpus with the tokenizer trained above: loading it, reading, sentence
                   segmentation, tokenization, shards, the tokenizer copy, manifest
MB/s is input file bytes per wall second. The best round of each run is reported, by wall time
and by CPU seconds of the process (all threads), which other processes disturb less. --threads
sets RAYON_NUM_THREADS (the Rust thread pool of `tokenizers`; default: one per core).
--memory adds one run of each in a fresh subprocess for its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "wikipedia-en-extract"
OUT = ROOT / "bench" / "out" / "families"
FILES = ("wiki.valid.txt", "wiki.test.txt")
JOBS = ("train-ceiling", "train", "encode-ceiling", "prepare")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ceiling_trainer(kind: str, vocab_size: int):
    """(backend, trainer) of the bare trainer, as train_bpe / train_unigram set them up."""
    from tokenizers import pre_tokenizers, trainers
    from tokenizers.models import BPE, Unigram

    from muppets.tokenization.bpe import byte_level_backend
    from muppets.tokenization.families import style_for
    from muppets.tokenization.styles import trainer_tokens
    from muppets.tokenization.unigram import sentencepiece_backend

    style = style_for(kind)
    if kind == "bpe":
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=trainer_tokens(style),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        return byte_level_backend(BPE()), trainer
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=trainer_tokens(style),
        unk_token=style.roles[1],
        max_piece_length=16,
        show_progress=False,
    )
    return sentencepiece_backend(Unigram(), lowercase=True), trainer


def body_lines(files: list[str]) -> list[str]:
    lines = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            lines += [t for t in map(str.strip, f) if t and not t.startswith(("<doc", "</doc"))]
    return lines


def setup(job: str, kind: str, vocab_size: int, files: list[str]):
    """The untimed set-up of a run; returns the function to time."""
    from muppets.data.prepare import (
        PrepareConfig,
        TokenizerTrainConfig,
        prepare_corpus,
        train_tokenizer,
    )
    from muppets.tokenization.families import load_any_tokenizer

    out = OUT / kind
    if job == "train-ceiling":
        backend, trainer = ceiling_trainer(kind, vocab_size)
        return lambda: backend.train(files, trainer)
    if job == "train":
        config = TokenizerTrainConfig(files, str(out / "tok"), vocab_size=vocab_size, kind=kind)
        return lambda: train_tokenizer(config)
    if job == "encode-ceiling":
        backend = load_any_tokenizer(out / "tok").backend
        lines = body_lines(files)

        def encode():
            for i in range(0, len(lines), 8192):
                backend.encode_batch_fast(lines[i : i + 8192], add_special_tokens=False)

        return encode
    config = PrepareConfig(files, str(out / "tok"), str(out / "shards"))
    return lambda: prepare_corpus(config)


def timed(run) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # the recipes' one-line summaries
        run()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def run_child(*args: str) -> float:
    """Peak RSS (MB) of one run in a fresh subprocess."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode:
        sys.exit(f"child {args[:2]} failed:\n{done.stdout}\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {cpu}, load average {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--files", nargs="+", default=list(FILES), help="file names in --data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=30000)
    parser.add_argument("--kinds", nargs="+", default=["bpe", "unigram"])
    parser.add_argument("--threads", type=int, help="RAYON_NUM_THREADS (default: one per core)")
    parser.add_argument("--memory", action="store_true", help="peak RSS of each, in subprocesses")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job, kind, vocab, *files = args.child
        timed(setup(job, kind, int(vocab), files))
        print(peak_rss_mb())
        return
    if args.threads and os.environ.get("RAYON_NUM_THREADS") != str(args.threads):
        # the pool is sized when tokenizers first uses it: set it before this process starts
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    files = [str(Path(args.data) / name) for name in args.files]
    mb = sum(Path(f).stat().st_size for f in files) / 1e6
    threads = os.environ.get("RAYON_NUM_THREADS", f"{os.cpu_count()} (one per core)")
    print(f"{len(files)} files, {mb:.2f} MB, vocabulary {args.vocab_size}, Rust threads {threads}")
    print(f"start: {machine()}", flush=True)
    runs = {(kind, job): [] for kind in args.kinds for job in JOBS}
    for r in range(args.rounds):
        for kind in args.kinds:
            for job in JOBS:  # ours right after its ceiling; train first: prepare needs its output
                runs[kind, job].append(timed(setup(job, kind, args.vocab_size, files)))
            line = {job: "{wall:.2f}/{cpu:.2f}".format(**runs[kind, job][-1]) for job in JOBS}
            print(f"round {r} {kind} wall/CPU s: {json.dumps(line)}; {machine()}", flush=True)
    rss = {}
    if args.memory:
        for kind in args.kinds:
            for job in JOBS:
                rss[kind, job] = run_child(job, kind, str(args.vocab_size), *files)
    import tokenizers

    print(f"\ntokenizers {tokenizers.__version__}; end: {machine()}\n")
    print(
        "| run | muppets MB/s | ceiling MB/s | ratio (wall) | ratio (CPU) | peak RSS ours / ceil. |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in args.kinds:
        for ours, ceiling in (("train", "train-ceiling"), ("prepare", "encode-ceiling")):
            o = min(runs[kind, ours], key=lambda x: x["wall"])
            c = min(runs[kind, ceiling], key=lambda x: x["wall"])
            o_cpu = min(x["cpu"] for x in runs[kind, ours])
            c_cpu = min(x["cpu"] for x in runs[kind, ceiling])
            memory = f"{rss[kind, ours]:.0f} / {rss[kind, ceiling]:.0f} MB" if rss else ""
            print(
                f"| {kind} {ours} | {mb / o['wall']:.2f} | {mb / c['wall']:.2f} | "
                f"{c['wall'] / o['wall']:.2f} | {c_cpu / o_cpu:.2f} | {memory} |"
            )


if __name__ == "__main__":
    main()
