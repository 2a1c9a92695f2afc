"""The knobs of a served /qa pass through ONNX Runtime, in one process and one thread: span
decoding question by question (tasks/prediction.py example_span) against a whole batch at once
(serve/qa_spans.py batch_spans), the padded tokens of one pass, and the session options. CPU
time a question (time.thread_time), best of --rounds, the cases in turns, so other jobs on a
shared machine inflate it less than wall time.

    .venv/bin/python bench/serve_qa_knobs.py --export runs/serve-bench/onnx-qa

The questions are XQuAD-en's (bench/serve_report.py), in batches of 8 as at 8 clients.
Figures: bench/RESULTS.md, "Serving under load".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serve_report import xquad_questions  # noqa: E402


def best_ms(cases: dict, rounds: int, n: int) -> dict[str, float]:
    """CPU milliseconds a question of each case, the best of `rounds`, the cases in turn."""
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            t = time.thread_time()
            run()
            best[name] = min(best[name], (time.thread_time() - t) / n * 1000)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="a `muppets export` of a QA model")
    parser.add_argument("--questions", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from muppets.serve.loading import load_served
    from muppets.serve.models import forward_features
    from muppets.serve.qa_spans import batch_spans
    from muppets.tasks.prediction import example_span

    torch.set_num_threads(1)
    route = load_served(args.export, torch.device("cpu"), 8192, 64).routes["qa"]
    routes = route.prepare.__self__  # TaskRoutes: model (the graph), setup, tokenizer
    graph, setup = routes.model, routes.setup
    questions = xquad_questions()[: args.questions]
    works = [
        route.prepare(SimpleNamespace(inputs=[SimpleNamespace(question=q, context=c)]), False)
        for _, q, c in questions
    ]
    batches = [works[i : i + 8] for i in range(0, len(works), 8)]
    n = len(works)
    scores = [route.forward(batch) for batch in batches]  # what the decoding gets

    def one_by_one():
        for batch, outputs in zip(batches, scores, strict=True):
            k = 0
            for work in batch:
                windows = work.data["features"]
                example_span(
                    setup, work.data["examples"][0], windows, outputs[k : k + len(windows)]
                )
                k += len(windows)

    def at_once():
        for batch, outputs in zip(batches, scores, strict=True):
            windows = [f for w in batch for f in w.data["features"]]
            owners = [q for q, w in enumerate(batch) for _ in w.data["features"]]
            batch_spans(setup, [w.data["examples"][0] for w in batch], windows, outputs, owners)

    cases = {"decode: example_span a question": one_by_one, "decode: batch_spans a batch": at_once}

    def forward(tokens: int):
        def run():
            graph.forward_tokens = tokens
            for batch in batches:
                windows = [f for w in batch for f in w.data["features"]]
                forward_features(graph, "span_qa", windows, routes.tokenizer.pad_id, 8192)

        return run

    for tokens in (256, 512, 1024, 2048):
        cases[f"forward: {tokens} padded tokens a pass"] = forward(tokens)

    path = str(Path(args.export) / "model.onnx")

    def session(**changes):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1  # as serve's
        for key, value in changes.items():
            if key == "config":
                options.add_session_config_entry(*value)
            else:
                setattr(options, key, value)
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    sessions = {
        "serve's (defaults)": session(),
        "enable_mem_pattern=False": session(enable_mem_pattern=False),
        "set_denormal_as_zero": session(config=("session.set_denormal_as_zero", "1")),
        "ORT_ENABLE_EXTENDED": session(
            graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ),
        "enable_cpu_mem_arena=False": session(enable_cpu_mem_arena=False),
    }

    def with_session(chosen):
        def run():
            graph.session, graph.forward_tokens = chosen, 512
            for batch in batches:
                route.forward(batch)

        return run

    for name, chosen in sessions.items():
        cases[f"session: {name}"] = with_session(chosen)
    measured = best_ms(cases, args.rounds, n)
    print(f"CPU ms a question, best of {args.rounds}, {n} XQuAD questions in batches of 8:")
    for name, ms in measured.items():
        print(f"  {name:<42} {ms:6.3f}")
    one, many = measured["decode: example_span a question"], measured["decode: batch_spans a batch"]
    print(f"decoding: batch_spans {one / many:.2f}x example_span's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
