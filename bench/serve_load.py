"""A bounded load test of `muppets serve` on loopback, beside transformers' pipeline behind the
same server (the same app, routes and JSON) without batching, on the same model and machine.

    .venv/bin/python bench/serve_load.py --classify-model CLASSIFIER --qa-model QA_MODEL \
        [--backend torch,onnx,onnx-int8] --out runs/serve-bench/load.json

--backend names our servers, each measured beside the same pipeline: torch (`muppets serve` on
the model), onnx and onnx-int8 (`muppets serve` on its `muppets export`, fp32 or int8, made in
--work when missing); each one's dev score is printed beside its speed.

For each task (classify: SST-2 dev sentences, one per request; qa: XQuAD-en questions, one per
request) and each server (ours: `muppets serve`; pipeline: this script's `pipeline-server`, every
request run alone by transformers: the text-classification pipeline, or for QA the steps of the
question-answering pipeline that transformers 5 removed), closed-loop clients at each --concurrency
send requests until --requests are answered or --seconds pass (it stops by itself): throughput and
p50/p95/p99 latency, side by side with the ratio, and each server's CPU time (all its threads) a
request. Both servers run at once and take turns at each level, --rounds times; each keeps its best
round (the machine is shared with other jobs). Then overload: --overload-clients clients at a server
whose queue holds --overload-queue, each request answered with a result or a 503 (counted), the
server's RSS before and at its peak (VmHWM). Then the predictions: every SST-2 dev sentence and
XQuAD question through our server against `muppets predict` on the same files (identical labels and
spans), and against the pipeline's.

Our models are converted for transformers with `muppets convert --to hf` into --work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serve_report import (  # noqa: E402
    PIPELINE,
    compare,
    print_report,
    sst2_sentences,
    xquad_questions,
)

SERVE = [sys.executable, "-m", "muppets", "serve"]
EXPORT = [sys.executable, "-m", "muppets", "export"]
BACKENDS = ("torch", "onnx", "onnx-int8")  # ours: the PyTorch model, its ONNX exports


# ---------------------------------------------------------------- the pipeline behind our app


def qa_reference(
    model,
    tokenizer,
    question: str,
    context: str,
    max_seq_length: int,
    doc_stride: int,
    max_answer_length: int = 30,
) -> dict:
    """One question as transformers' question-answering pipeline answered it (removed in
    transformers 5): the tokenizer's overlapping windows (stride = doc_stride tokens of overlap),
    one forward pass over them, the best context span i <= j < i + max_answer_length by
    start + end logits over all windows, back to characters with the offset mapping."""
    import numpy as np
    import torch

    encoded = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_tensors="pt",
    )
    offsets = encoded.pop("offset_mapping").numpy()  # (W, T, 2)
    encoded.pop("overflow_to_sample_mapping")
    with torch.inference_mode():
        out = model(**encoded)
    best = (-np.inf, 0, 0)
    for w in range(len(offsets)):
        context_tokens = np.array([s == 1 for s in encoded.sequence_ids(w)])  # (T,)
        start = np.where(context_tokens, out.start_logits[w].numpy(), -np.inf)
        end = np.where(context_tokens, out.end_logits[w].numpy(), -np.inf)
        scores = start[:, None] + end[None, :]  # (T, T): span i..j
        i, j = np.indices(scores.shape)
        scores[(j < i) | (j - i + 1 > max_answer_length)] = -np.inf
        k = int(np.argmax(scores))
        if scores.flat[k] > best[0]:
            i, j = divmod(k, scores.shape[1])
            best = (float(scores.flat[k]), int(offsets[w, i, 0]), int(offsets[w, j, 1]))
    score, a, b = best
    return {"answer": context[a:b], "start": a, "end": b, "score": score}


def pipeline_app(task: str, model: str, max_seq_length: int, doc_stride: int):
    """Our app (validation, errors, queue, metrics) whose one route runs transformers on each
    request alone (a batch budget of one request): the text-classification pipeline, or for QA
    the steps of the question-answering pipeline (qa_reference; transformers 5 removed it)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    from muppets.serve.app import Limits, build_app
    from muppets.serve.loading import Served
    from muppets.serve.models import Route, Work

    if task == "classify":
        pipe = pipeline("text-classification", model=model, device=torch.device("cpu"))
    else:
        qa_model = AutoModelForQuestionAnswering.from_pretrained(model).eval()
        tokenizer = AutoTokenizer.from_pretrained(model)

    def prepare(request, truncate):
        return Work(task, 1, {"request": request})

    def run(works):
        request = works[0].data["request"]
        if task == "classify":
            results = []
            for text in request.inputs:
                scores = pipe(text, top_k=None, truncation=True, max_length=max_seq_length)
                best = max(scores, key=lambda s: s["score"])
                probabilities = {s["label"]: s["score"] for s in scores}
                results.append({"label": best["label"], "probabilities": probabilities})
            return [{"results": results}]
        results = [
            qa_reference(
                qa_model, tokenizer, item.question, item.context, max_seq_length, doc_stride
            )
            for item in request.inputs
        ]
        return [{"results": results}]

    served = Served({task: Route(prepare, run)}, {"kind": "transformers pipeline"})
    return build_app(served, Limits(max_batch_tokens=1, max_wait_ms=0))


# ---------------------------------------------------------------- servers and clients


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(argv: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server stopped: {process.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start in 120 s")


def stop_server(process: subprocess.Popen) -> int:
    process.terminate()  # SIGTERM: graceful
    return process.wait(60)


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def post(connection, port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """One request on a kept-alive connection (reader, writer), opened on first use."""
    if connection[0] is None:
        connection[:] = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = connection
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "connection" and value.strip().lower() == "close":
            close = True
    payload = await reader.readexactly(length)
    if close:
        writer.close()
        connection[:] = [None, None]
    return int(status_line.split()[1]), payload


async def load(port, path, bodies, concurrency, max_requests, seconds) -> dict:
    """Closed loop: each client sends its next request when the last is answered."""
    latencies, statuses, next_body = [], {}, iter(range(10**9))
    started = time.monotonic()

    async def client():
        connection = [None, None]
        while len(latencies) < max_requests and time.monotonic() - started < seconds:
            body = bodies[next(next_body) % len(bodies)]
            t0 = time.monotonic()
            status, _ = await post(connection, port, path, body)
            latencies.append(time.monotonic() - t0)
            statuses[status] = statuses.get(status, 0) + 1
        if connection[1] is not None:
            connection[1].close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p95_ms": cuts[94] * 1000,
        "p99_ms": cuts[98] * 1000,
        "statuses": statuses,
    }


async def overload(port, path, bodies, clients, per_client) -> dict:
    """Every client sends per_client requests without waiting for a turn; none is retried."""
    statuses = {}

    async def client(k):
        connection = [None, None]
        for n in range(per_client):
            status, _ = await post(
                connection, port, path, bodies[(k * per_client + n) % len(bodies)]
            )
            statuses[status] = statuses.get(status, 0) + 1
        connection[1].close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return statuses


async def answers(port, path, bodies) -> list[dict]:
    connection, out = [None, None], []
    for body in bodies:
        status, payload = await post(connection, port, path, body)
        assert status == 200, payload[:300]
        out += json.loads(payload)["results"]
    connection[1].close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("pipeline-server")
    server.add_argument("--task", choices=("classify", "qa"), required=True)
    server.add_argument("--model", required=True)
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--max-seq-length", type=int, default=128)
    server.add_argument("--doc-stride", type=int, default=128)
    server.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classify-model", required=False)
    parser.add_argument("--qa-model", required=False)
    parser.add_argument(
        "--backend",
        default="torch",
        help=f"our servers, comma-separated, each beside the pipeline: {', '.join(BACKENDS)}",
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--threads", type=int, default=1, help="threads in each server")
    parser.add_argument("--requests", type=int, default=1000, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=10.0, help="longest time per round")
    parser.add_argument("--rounds", type=int, default=2, help="turns per level; the best kept")
    parser.add_argument("--overload-clients", type=int, default=64)
    parser.add_argument("--overload-queue", type=int, default=8)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "serve-bench")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "pipeline-server":
        import torch
        import uvicorn

        torch.set_num_threads(args.threads)
        app = pipeline_app(args.task, args.model, args.max_seq_length, args.doc_stride)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return 0
    return run_bench(args)


def run_bench(args) -> int:
    from muppets.tasks.setup import load_task

    args.work.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    backends = args.backend.split(",")
    if not set(backends) <= set(BACKENDS):
        raise SystemExit(f"--backend: one or more of {', '.join(BACKENDS)}, got {args.backend}")
    report = {"machine": f"{os.cpu_count()} CPUs", "threads": args.threads, "levels": levels}
    report["backends"] = backends
    report.update(rounds=args.rounds, seconds=args.seconds, requests=args.requests)
    report.update(load_average_before=os.getloadavg()[0], tasks={})
    sentences = sst2_sentences()
    questions = xquad_questions()
    tasks = {}
    if args.classify_model:
        bodies = [json.dumps({"inputs": [s]}).encode() for s in sentences]
        tasks["classify"] = (args.classify_model, bodies)
    if args.qa_model:
        bodies = [
            json.dumps({"inputs": [{"question": q, "context": c}]}).encode()
            for _, q, c in questions
        ]
        tasks["qa"] = (args.qa_model, bodies)
    for task, (model, bodies) in tasks.items():
        setup = load_task(model)
        hf = args.work / f"hf-{task}"
        if not (hf / "config.json").is_file():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "muppets",
                    "convert",
                    "--input",
                    model,
                    "--out",
                    str(hf),
                    "--to",
                    "hf",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        servers = {
            backend: [*SERVE, "--model", served_model(model, backend, task, args.work)]
            + ["--threads", str(args.threads)]
            for backend in backends
        }
        servers[PIPELINE] = [
            sys.executable,
            __file__,
            "pipeline-server",
            "--task",
            task,
            "--model",
            str(hf),
            "--max-seq-length",
            str(setup.max_seq_length),
            "--doc-stride",
            str(setup.doc_stride),
            "--threads",
            str(args.threads),
        ]
        # Every server up at once; at each level they take turns, --rounds times, and each keeps
        # its best round: all see the same share of a machine other jobs also use.
        ports = {name: free_port() for name in servers}
        processes = {
            n: start_server([*argv, "--port", str(ports[n])], ports[n])
            for n, argv in servers.items()
        }
        path, results = f"/{task}", {name: {"levels": []} for name in servers}
        for name in servers:
            asyncio.run(load(ports[name], path, bodies[:20], 1, 20, 60))  # warm-up
        for c in levels:
            best = {}
            for _ in range(args.rounds):
                for name in servers:
                    before = cpu_seconds(processes[name].pid)
                    found = asyncio.run(
                        load(ports[name], path, bodies, c, args.requests, args.seconds)
                    )
                    spent = cpu_seconds(processes[name].pid) - before
                    found["cpu_ms_per_request"] = 1000 * spent / found["requests"]
                    if name not in best or found["throughput"] > best[name]["throughput"]:
                        best[name] = found
            for name, measured in best.items():
                results[name]["levels"].append(measured)
                print(
                    f"{task} {name} c={c}: {measured['throughput']:.1f} req/s, p50 "
                    f"{measured['p50_ms']:.1f} p95 {measured['p95_ms']:.1f} ms, server CPU "
                    f"{measured['cpu_ms_per_request']:.1f} ms a request",
                    flush=True,
                )
        for name, process in processes.items():
            results[name]["answers"] = asyncio.run(answers(ports[name], path, bodies))
            results[name]["memory_kib"] = memory_kib(process.pid)
            results[name]["exit"] = stop_server(process)
        found = compare(task, model, hf, setup.labels, results, args.work)
        report["tasks"][task] = found
        report["tasks"][task]["levels"] = {n: r["levels"] for n, r in results.items()}
    if args.classify_model:
        report["overload"] = run_overload(args, tasks["classify"][1])
    report["load_average_after"] = os.getloadavg()[0]
    print_report(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def served_model(model: str, backend: str, task: str, work: Path) -> str:
    """The directory a backend serves: the model, or its export in work (made when missing or
    made from another model)."""
    if backend == "torch":
        return model
    out = work / f"{backend}-{task}"
    record = out / "export.json"
    if not record.is_file() or json.loads(record.read_text())["source"] != model:
        quantize = "int8" if backend == "onnx-int8" else "none"
        command = [*EXPORT, "--model", model, "--out", str(out), "--quantize", quantize]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return str(out)


def run_overload(args, bodies) -> dict:
    port = free_port()
    argv = [*SERVE, "--model", args.classify_model, "--threads", str(args.threads)]
    argv += ["--max-queue", str(args.overload_queue), "--port", str(port)]
    process = start_server(argv, port)
    asyncio.run(load(port, "/classify", bodies[:20], 1, 20, 60))
    before = memory_kib(process.pid)
    statuses = asyncio.run(overload(port, "/classify", bodies, args.overload_clients, 10))
    after = memory_kib(process.pid)
    alive = process.poll() is None
    statuses_after = asyncio.run(load(port, "/classify", bodies[:10], 1, 10, 30))["statuses"]
    code = stop_server(process)
    return {
        "clients": args.overload_clients,
        "queue": args.overload_queue,
        "statuses": statuses,
        "rss_before_kib": before["VmRSS"],
        "rss_peak_kib": after["VmHWM"],
        "alive": alive,
        "after": statuses_after,
        "exit": code,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
