"""Tokenizer training and `prepare` with byte-level BPE and Unigram, against bare `tokenizers`.

    .venv/bin/python bench/tokenizer_families.py [--data DIR] [--files NAME ...] [--rounds 2]

Per kind (bpe, unigram), rounds of four runs, each in a fresh subprocess so that its peak RSS is
its own, interleaved so that a change in the machine's load hits ours and the ceiling alike:
  train ceiling    Tokenizer.train(files, trainer): the Rust trainer reading the files itself,
                   the same pipeline and trainer settings as ours (markup lines included)
  muppets train    train_tokenizer (`muppets tokenizer train --kind`): Python reads the files,
                   drops WikiExtractor markup, streams paragraphs into the same trainer
  encode ceiling   the non-empty body lines read into memory first, then only
                   Tokenizer.encode_batch_fast(lines) is timed (8192 lines a call)
  muppets prepare  prepare_corpus with the tokenizer trained above (reading, sentence
                   segmentation, tokenization, shards, manifest)
MB/s is input file bytes per wall second; the best round is reported, and CPU seconds (all threads),
which other processes disturb less than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
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


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(run) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    extra = run() or {}
    done = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    return {**done, "peak_rss_mb": peak_rss_mb(), **extra}


def child(job: str, kind: str, vocab_size: int, files: list[str]) -> dict:
    from muppets.tokenization.families import style_for

    style = style_for(kind)
    out = OUT / kind
    if job == "train-ceiling":
        from tokenizers import pre_tokenizers, trainers
        from tokenizers.models import BPE, Unigram

        from muppets.tokenization.bpe import byte_level_backend
        from muppets.tokenization.styles import trainer_tokens
        from muppets.tokenization.unigram import sentencepiece_backend

        if kind == "bpe":
            backend = byte_level_backend(BPE())
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=2,
                special_tokens=trainer_tokens(style),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            backend = sentencepiece_backend(Unigram(), lowercase=True)
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size,
                special_tokens=trainer_tokens(style),
                unk_token=style.roles[1],
                max_piece_length=16,
                show_progress=False,
            )
        return timed(lambda: backend.train(files, trainer))
    if job == "train":
        from muppets.data.prepare import TokenizerTrainConfig, train_tokenizer

        config = TokenizerTrainConfig(files, str(out / "tok"), vocab_size=vocab_size, kind=kind)
        return timed(lambda: {"vocab": train_tokenizer(config).vocab_size})
    if job == "encode-ceiling":
        from muppets.tokenization.families import load_any_tokenizer

        backend = load_any_tokenizer(out / "tok").backend
        lines = []
        for path in files:
            with open(path, encoding="utf-8") as f:
                lines += [t for t in map(str.strip, f) if t and not t.startswith(("<doc", "</doc"))]

        def encode():
            for i in range(0, len(lines), 8192):
                backend.encode_batch_fast(lines[i : i + 8192], add_special_tokens=False)

        return timed(encode)
    from muppets.data.prepare import PrepareConfig, prepare_corpus

    config = PrepareConfig(files, str(out / "tok"), str(out / "shards"))
    return timed(lambda: {"tokens": prepare_corpus(config)["tokens"]})


def run_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode:
        sys.exit(f"child {args[:2]} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {cpu}, load {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--files", nargs="+", default=list(FILES), help="file names in --data")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=30000)
    parser.add_argument("--kinds", nargs="+", default=["bpe", "unigram"])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job, kind, vocab, *files = args.child
        print(json.dumps(child(job, kind, int(vocab), files)))
        return
    files = [str(Path(args.data) / name) for name in args.files]
    mb = sum(Path(f).stat().st_size for f in files) / 1e6
    print(f"{len(files)} files, {mb:.2f} MB, vocabulary {args.vocab_size}; {machine()}")
    jobs = ("train-ceiling", "train", "encode-ceiling", "prepare")
    rows = []
    for kind in args.kinds:
        runs: dict[str, list[dict]] = {job: [] for job in jobs}
        for _ in range(args.rounds):
            for job in jobs:
                runs[job].append(run_child(job, kind, str(args.vocab_size), *files))
            print(f"{kind}: {json.dumps(runs)}", flush=True)
        best = {job: min(r, key=lambda x: x["wall"]) for job, r in runs.items()}
        rss = {job: max(x["peak_rss_mb"] for x in r) for job, r in runs.items()}
        for ours, ceiling in (("train", "train-ceiling"), ("prepare", "encode-ceiling")):
            o, c = best[ours], best[ceiling]
            rows.append(
                f"| {kind} {ours} | {mb / o['wall']:.2f} | {mb / c['wall']:.2f} | "
                f"{c['wall'] / o['wall']:.2f} | {c['cpu'] / o['cpu']:.2f} | "
                f"{rss[ours]:.0f} / {rss[ceiling]:.0f} MB |"
            )
    import tokenizers

    print(f"\ntokenizers {tokenizers.__version__}; {machine()}\n")
    print(
        "| run | muppets MB/s | ceiling MB/s | ratio (wall) | ratio (CPU) | peak RSS ours / ceil. |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
