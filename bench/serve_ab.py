"""`muppets serve` at an earlier commit against the working tree, beside transformers' pipeline
server, in turns at one concurrency: did a change to the server pay, on a machine shared with
other jobs? Every server is up at once and each round gives each the same --seconds; the mean
and best throughput of each, its CPU time a request (all threads) and its busiest thread's (the
batch worker), and the ratios to the pipeline.

    .venv/bin/python bench/serve_ab.py --before 213167b --model runs/serve-bench/onnx-qa \
        --hf-model runs/serve-bench/hf-qa [--concurrency 8 --rounds 4 --seconds 8]

The earlier commit's `muppets` package is taken with `git archive` into a temporary directory
and run from there; the model directory is served by both (qa: XQuAD-en questions, one a
request, as bench/serve_load.py sends them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serve_load import free_port, load, stop_server  # noqa: E402
from serve_report import xquad_questions  # noqa: E402


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process (/proc/PID/task/TID/stat utime + stime)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        found[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def start(argv: list[str], port: int, cwd: Path) -> subprocess.Popen:
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server stopped: {process.stderr.read().decode()[-2000:]}")
        if asyncio.run(_answers(port)):
            return process
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start in 120 s")


async def _answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--model", required=True, help="a QA model or its export")
    parser.add_argument("--hf-model", required=True, help="its `muppets convert --to hf` copy")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    model, hf = str(Path(args.model).resolve()), str(Path(args.hf_model).resolve())
    bodies = [
        json.dumps({"inputs": [{"question": q, "context": c}]}).encode()
        for _, q, c in xquad_questions()
    ]
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(
            ["git", "archive", args.before, "muppets"], cwd=ROOT, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        serve = [sys.executable, "-m", "muppets", "serve", "--model", model, "--threads", "1"]
        pipeline = [sys.executable, str(ROOT / "bench" / "serve_load.py"), "pipeline-server"]
        pipeline += ["--task", "qa", "--model", hf, "--max-seq-length", "256", "--threads", "1"]
        argvs = {
            f"before ({args.before})": (serve, Path(old)),
            "now": (serve, ROOT),
            "pipeline": (pipeline, ROOT),
        }
        ports = {name: free_port() for name in argvs}
        processes = {
            name: start([*argv, "--port", str(ports[name])], ports[name], cwd)
            for name, (argv, cwd) in argvs.items()
        }
        try:
            measured = rounds(args, processes, ports, bodies)
        finally:
            for process in processes.values():
                stop_server(process)
    report(args, measured)
    return 0


def rounds(args, processes, ports, bodies) -> dict[str, list[tuple[float, float, float]]]:
    """Per server, per round: (req/s, CPU ms a request, its busiest thread's CPU ms a request)."""
    for name in processes:
        asyncio.run(load(ports[name], "/qa", bodies[:20], 1, 20, 60))  # warm-up
    measured: dict[str, list] = {name: [] for name in processes}
    for r in range(args.rounds):
        for name, process in processes.items():
            before = thread_seconds(process.pid)
            found = asyncio.run(
                load(ports[name], "/qa", bodies, args.concurrency, 10**6, args.seconds)
            )
            after = thread_seconds(process.pid)
            spent = [after[t] - before.get(t, 0.0) for t in after]
            per = 1000 / found["requests"]
            row = (found["throughput"], sum(spent) * per, max(spent) * per)
            measured[name].append(row)
            print(
                f"round {r} {name}: {row[0]:.1f} req/s, CPU {row[1]:.2f} ms a request", flush=True
            )
    return measured


def report(args, measured) -> None:
    pipe = measured["pipeline"]
    pipe_mean = sum(t for t, _, _ in pipe) / len(pipe)
    pipe_best = max(t for t, _, _ in pipe)
    print(
        f"\n{args.concurrency} clients, {args.rounds} rounds of {args.seconds:g} s in turns; "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'server':<22} {'mean':>7} {'best':>7} | {'ratio mean':>10} {'best':>6} | CPU ms/req")
    for name, rows in measured.items():
        mean = sum(t for t, _, _ in rows) / len(rows)
        best = max(t for t, _, _ in rows)
        cpu = f"{min(c for _, c, _ in rows):.2f}-{max(c for _, c, _ in rows):.2f}"
        busiest = f"{min(b for _, _, b in rows):.2f}-{max(b for _, _, b in rows):.2f}"
        print(
            f"{name:<22} {mean:7.1f} {best:7.1f} | {mean / pipe_mean:9.2f}x "
            f"{best / pipe_best:5.2f}x | {cpu} (busiest thread {busiest})"
        )


if __name__ == "__main__":
    sys.exit(main())
