"""`muppets prepare` against the bare Hugging Face `tokenizers` ceiling, on the same text.

    .venv/bin/python bench/prepare.py [--data DIR] [--files 8]

Runs, each in a fresh subprocess so that peak RSS is its own:
  ceiling   the non-empty body lines of every file, read into memory first, then only
            `Tokenizer.encode_batch(lines, add_special_tokens=False)` is timed (8192 lines a call);
            encode_batch_fast (no offsets) is timed too, as a stricter ceiling.
  prepare   prepare_corpus on the first half of the files, then on all of them (reading, UTF-8
            decoding, sentence segmentation, tokenization, shard writing, manifest).
MB/s is input file bytes (markup included) per wall second. CPU seconds (all threads) are shown
too: the machine may be shared, and CPU time is less disturbed by other processes than wall time.
Rounds of (ceiling, half, full) then a last ceiling; the best wall time of each is reported.
The 30522 WordPiece tokenizer is trained once on the first two files and cached in bench/out/.
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
# ../shared/data beside the project root (as bench/budget_data.py), or --data
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia-en-extract"
OUT = ROOT / "bench" / "out"
TOKENIZER = OUT / "tokenizer-30522"


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_ceiling(files: list[str]) -> dict:
    from muppets.tokenization import load_tokenizer

    backend = load_tokenizer(TOKENIZER).backend
    lines = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            lines += [t for t in map(str.strip, f) if t and not t.startswith(("<doc", "</doc"))]
    result = {}
    for name in ("encode_batch", "encode_batch_fast"):
        encode = getattr(backend, name)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(lines), 8192):
            encode(lines[i : i + 8192], add_special_tokens=False)
        result[name] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    return result


def child_prepare(files: list[str], out: str, verify_every: int, prefetch: int) -> dict:
    from muppets.data.prepare import PrepareConfig, prepare_corpus

    config = PrepareConfig(files, str(TOKENIZER), out, prefetch_batches=prefetch)
    wall, cpu = time.perf_counter(), time.process_time()
    manifest = prepare_corpus(config)
    result = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    result["peak_rss_mb"] = peak_rss_mb()  # before the check below, which holds documents
    result["tokens"] = manifest["tokens"]
    if verify_every:  # the shards hold exactly the ids of tokenizing each sentence alone
        from muppets.data.shards import ShardedCorpus
        from muppets.data.text import read_documents
        from muppets.tokenization import load_tokenizer

        corpus, tokenizer = ShardedCorpus(out), load_tokenizer(TOKENIZER)
        for i, document in enumerate(read_documents(files)):
            if i % verify_every == 0:
                want = tokenizer.encode_batch(document.sentences)
                assert [a.tolist() for a in corpus[i]] == want, f"document {i} differs"
        result["verified"] = len(range(0, len(corpus), verify_every))
    return result


def run_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode:
        sys.exit(f"child {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--files", type=int, default=8, help="wiki.train.0?.txt files in all")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of ceiling, half, full")
    parser.add_argument("--inline", action="store_true", help="also run prefetch_batches=0")
    parser.add_argument("--verify-every", type=int, default=50, help="check every N-th document")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # inside a subprocess: print one JSON line
        kind, *rest = args.child
        if kind == "ceiling":
            result = child_ceiling(rest)
        else:
            result = child_prepare(rest[3:], rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return

    files = sorted(str(p) for p in Path(args.data).glob("wiki.train.0?.txt"))[: args.files]
    half = files[: len(files) // 2]
    if not (TOKENIZER / "tokenizer.json").is_file():
        from muppets.data.prepare import TokenizerTrainConfig, train_tokenizer

        train_tokenizer(TokenizerTrainConfig(inputs=files[:2], out=str(TOKENIZER)))
    sets = {"half": half, "full": files}
    sizes = {name: sum(Path(f).stat().st_size for f in fs) / 1e6 for name, fs in sets.items()}
    print(f"{len(files)} files, {sizes['full']:.1f} MB; {machine()}", flush=True)
    # Rounds of ceiling, half, full; then the ceiling once more. The best wall time of each is
    # kept: on a shared machine it is the one least disturbed by other processes.
    runs: dict[str, list[dict]] = {"ceiling": [], "half": [], "full": [], "inline": []}
    for round in range(args.rounds):
        runs["ceiling"].append(run_child("ceiling", *files))
        for name, fs in sets.items():
            verify = str(args.verify_every if round == 0 else 0)
            out = str(OUT / f"shards-{name}")
            runs[name].append(run_child("prepare", out, verify, "2", *fs))
        if args.inline:  # what reading ahead in a thread buys (prefetch_batches=0)
            inline = str(OUT / "shards-inline")
            runs["inline"].append(run_child("prepare", inline, "0", "0", *files))
        print(f"round {round + 1}: {json.dumps(runs)}", flush=True)
    runs["ceiling"].append(run_child("ceiling", *files))
    report(runs, sizes, len(files))


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, load {load:.1f}"


def report(runs: dict[str, list[dict]], sizes: dict[str, float], n: int) -> None:
    import tokenizers

    def best(results: list[dict]) -> dict:
        return min(results, key=lambda r: r["wall"])

    full_mb = sizes["full"]
    rows = []
    ceiling = {}
    for name in ("encode_batch", "encode_batch_fast"):
        ceiling[name] = best([r[name] for r in runs["ceiling"]])
        each = ", ".join(f"{full_mb / r[name]['wall']:.2f}" for r in runs["ceiling"])
        label = f"ceiling: tokenizers `{name}` on the lines"
        rows.append((label, full_mb / ceiling[name]["wall"], ceiling[name]["cpu"], "", each))
    for name in ("half", "full", "inline"):
        if not runs[name]:
            continue
        mb, r = sizes["half" if name == "half" else "full"], best(runs[name])
        files = n // 2 if name == "half" else n
        label = f"muppets prepare, {name} corpus ({files} files, {mb:.0f} MB)"
        if name == "inline":
            label = "muppets prepare, full corpus, no read-ahead thread (prefetch_batches=0)"
        cpu = r["cpu"] * full_mb / mb  # scaled to the full corpus, to compare with the ceiling
        rss = f"{max(x['peak_rss_mb'] for x in runs[name]):.0f} MB"
        each = ", ".join(f"{mb / x['wall']:.2f}" for x in runs[name])
        rows.append((label, mb / r["wall"], cpu, rss, each))
    print(f"\ntokenizers {tokenizers.__version__}; CPU s (all threads) scaled to the full corpus\n")
    print("| run | best MB/s | CPU s | peak RSS | MB/s of each round |")
    print("| --- | --- | --- | --- | --- |")
    for label, speed, cpu, rss, each in rows:
        print(f"| {label} | {speed:.2f} | {cpu:.1f} | {rss} | {each} |")
    full = best(runs["full"])
    print()
    for name, c in ceiling.items():
        wall_ratio, cpu_ratio = c["wall"] / full["wall"], c["cpu"] / full["cpu"]
        print(f"prepare / {name}: {wall_ratio:.2f} by wall time, {cpu_ratio:.2f} by CPU time")
    rss = [max(x["peak_rss_mb"] for x in runs[name]) for name in ("half", "full")]
    print(f"peak RSS full / half corpus: {rss[1] / rss[0]:.2f}; tokens: {full['tokens']:,}")


if __name__ == "__main__":
    main()
