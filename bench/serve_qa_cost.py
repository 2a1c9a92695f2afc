"""Where the CPU time of a /qa request goes, in one process and one torch thread: our route's
tokenization and windows, its run (forward + span decoding) alone and in batches, the forward by
the padded tokens of one pass, and transformers' steps behind the baseline server; then the
arithmetic of both (windows, tokens and FLOPs a question) and what it takes at this core's matmul
speed. CPU time (time.process_time), best of --rounds, so other jobs on a shared machine inflate
it less than wall time.

    .venv/bin/python bench/serve_qa_cost.py --qa-model runs/serve-bench/squad/size-3000/seed-1 \
        [--export runs/serve-bench/onnx-qa --export runs/serve-bench/onnx-int8-qa]

The transformers copy of the model is bench/serve_load.py's (`muppets convert --to hf`, in
runs/serve-bench/hf-qa). Figures: bench/RESULTS.md, "Serving under load".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serve_load import qa_reference, xquad_questions  # noqa: E402


def window_flops(T: int, H: int, I: int, layers: int) -> int:
    """Multiply-adds x 2 of one window of T tokens: the QKV, output and feed-forward Linear
    layers (2 T (4 H^2 + 2 H I)) and the two attention products (4 T^2 H), per layer."""
    return layers * (2 * T * (4 * H * H + 2 * H * I) + 4 * T * T * H)


def best_cpu_ms(cases: dict, rounds: int, n: int) -> dict[str, float]:
    """CPU milliseconds a question of each case, the best of `rounds`, the cases in turn."""
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            t = time.process_time()
            run()
            best[name] = min(best[name], (time.process_time() - t) / n * 1000)
    return best


def onnx_forward(graph, features: list, pad: int, tokens: int) -> list:
    """forward_features through an exported graph at `tokens` padded tokens a pass."""
    from muppets.serve.models import forward_features

    kept, graph.forward_tokens = graph.forward_tokens, tokens
    try:
        return forward_features(graph, "span_qa", features, pad, tokens)
    finally:
        graph.forward_tokens = kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa-model", required=True)
    parser.add_argument("--hf-model", default=str(ROOT / "runs" / "serve-bench" / "hf-qa"))
    parser.add_argument("--questions", type=int, default=96, help="timed XQuAD questions")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--export",
        action="append",
        default=[],
        help="a `muppets export` of the QA model (repeatable): its route timed beside ours",
    )
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    import muppets.serve.models as serve_models
    from muppets.serve.loading import load_served
    from muppets.serve.models import forward_features

    torch.set_num_threads(1)
    capped = serve_models.CPU_FORWARD_TOKENS
    served = load_served(args.qa_model, torch.device("cpu"), 8192, 64)
    route = served.routes["qa"]
    ours = route.prepare.__self__  # TaskRoutes: model, setup, tokenizer
    hf = AutoModelForQuestionAnswering.from_pretrained(args.hf_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.hf_model)
    setup, config = ours.setup, hf.config
    L, stride = setup.max_seq_length, setup.doc_stride

    def request(q: str, c: str):
        item = SimpleNamespace(question=q, context=c)
        return SimpleNamespace(inputs=[item])

    def hf_windows(q: str, c: str) -> dict:
        encoded = tokenizer(
            q,
            c,
            truncation="only_second",
            max_length=L,
            stride=stride,
            return_overflowing_tokens=True,
            padding="longest",
            return_tensors="pt",
        )
        encoded.pop("overflow_to_sample_mapping")
        return encoded

    everything = xquad_questions()
    timed = everything[: args.questions]
    requests = [request(q, c) for _, q, c in timed]
    works = [route.prepare(r, False) for r in requests]
    features = [f for w in works for f in w.data["features"]]
    n, pad = len(timed), ours.tokenizer.pad_id

    def batches(size: int):
        return lambda: [route.run(works[i : i + size]) for i in range(0, n, size)]

    cases = {
        "ours: tokenize + windows": lambda: [route.prepare(r, False) for r in requests],
        "ours: run alone": batches(1),
        "ours: run, batches of 8": batches(8),
        "ours: run, batches of 32": batches(32),
        "transformers: tokenize + forward": lambda: [hf(**hf_windows(q, c)) for _, q, c in timed],
        "transformers: + decoding": lambda: [
            qa_reference(hf, tokenizer, q, c, L, stride) for _, q, c in timed
        ],
    }
    for directory in args.export:  # ONNX Runtime: the same route code, the exported graph
        exported = load_served(directory, torch.device("cpu"), 8192, 64)
        label = f"onnx {exported.info['quantize']}"
        mine = [exported.routes["qa"].prepare(r, False) for r in requests]
        for size in (1, 8, 32):
            cases[f"{label}: run, batches of {size}"] = lambda e=exported, m=mine, k=size: [
                e.routes["qa"].run(m[i : i + k]) for i in range(0, n, k)
            ]
    sweep = {}
    for tokens in (512, 1024, 1536, 2048, 3072, 4096, 8192):
        sweep[f"ours: forward, {tokens} tokens a pass"] = lambda t=tokens: forward_features(
            ours.model, "span_qa", features, pad, t
        )
    if args.export:  # the exported graph by padded tokens a pass (the server's: 512)
        graph = load_served(args.export[0], torch.device("cpu"), 8192, 64).routes["qa"]
        graph = graph.prepare.__self__.model
        for tokens in (256, 512, 1024, 2048):
            sweep[f"onnx: forward, {tokens} tokens a pass"] = lambda t=tokens: onnx_forward(
                graph, features, pad, t
            )
    with torch.inference_mode():
        measured = best_cpu_ms(cases, args.rounds, n)  # as the server runs: a pass <= 2,048
        serve_models.CPU_FORWARD_TOKENS = 1 << 30  # lifted, to time the larger passes too
        measured.update(best_cpu_ms(sweep, args.rounds, n))
        serve_models.CPU_FORWARD_TOKENS = capped
    print(f"CPU ms a question, best of {args.rounds}, {n} XQuAD questions, one thread:")
    for name, ms in measured.items():
        print(f"  {name:<38} {ms:6.2f}")

    a, b = torch.randn(2048, 1024), torch.randn(1024, 1024)
    seconds = best_cpu_ms({"matmul": lambda: a @ b}, args.rounds * 5, 1000)["matmul"]
    peak = 2 * 2048 * 1024 * 1024 / seconds / 1e9  # GFLOP/s
    print(f"this core's matmul: {peak:.1f} GFLOP/s (2048 x 1024 x 1024, fp32)")

    shape = (config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    counts = {"ours": [], "transformers": []}
    for _, q, c in everything:
        work = route.prepare(request(q, c), False)
        counts["ours"].append([len(f) for f in work.data["features"]])
        counts["transformers"].append([int(x.numel()) for x in hf_windows(q, c)["input_ids"]])
    print(f"arithmetic a question over all {len(everything)} XQuAD questions:")
    for name, windows in counts.items():
        flops = sum(window_flops(T, *shape) for w in windows for T in w)
        print(
            f"  {name:<13} windows {sum(map(len, windows)) / len(windows):.3f}, tokens "
            f"{sum(map(sum, windows)) / len(windows):.1f}, MFLOP {flops / len(windows) / 1e6:.1f}, "
            f"{flops / len(windows) / peak / 1e6:.2f} ms at that matmul speed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
