"""What bench/serve_load.py reads and reports: the dev data (SST-2 dev sentences, XQuAD-en
questions and their gold answers), `muppets predict` on the same files, each server's answers
against predict's and the pipeline's with its dev score (SST-2 accuracy, XQuAD-en exact match and
F1), and the side-by-side table: every one of our backends against the pipeline.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_DEV = ROOT / "muppets" / "samples" / "SST-2" / "dev.tsv"
XQUAD = ROOT.parent / "shared" / "data" / "xquad-en" / "xquad.en.json"
PIPELINE = "pipeline"


def sst2_dev() -> list[tuple[str, str]]:
    """(sentence, gold label) of every SST-2 dev line."""
    with SST2_DEV.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["sentence"], row["label"]) for row in rows]


def sst2_sentences() -> list[str]:
    return [sentence for sentence, _ in sst2_dev()]


def xquad_items() -> list[dict]:
    data = json.loads(XQUAD.read_text(encoding="utf-8"))["data"]
    return [
        qa | {"context": p["context"]} for a in data for p in a["paragraphs"] for qa in p["qas"]
    ]


def xquad_questions() -> list[tuple[str, str, str]]:
    return [(qa["id"], qa["question"], qa["context"]) for qa in xquad_items()]


def muppets_predict(model: str, input_path: Path, out: Path) -> str:
    command = [sys.executable, "-m", "muppets", "predict", "--model", model]
    command += ["--input", str(input_path), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out.read_text(encoding="utf-8")


def dev_score(task: str, answers: list[str]) -> dict[str, float]:
    """SST-2 dev accuracy (%), or XQuAD-en exact match and F1 (%), of one server's answers."""
    from muppets.tasks.metrics import squad_v1_scores

    if task == "classify":
        gold = [label for _, label in sst2_dev()]
        return {
            "accuracy": 100 * sum(a == g for a, g in zip(answers, gold, strict=True)) / len(gold)
        }
    items = xquad_items()
    gold = {qa["id"]: [a["text"] for a in qa["answers"]] for qa in items}
    scores = squad_v1_scores(gold, {qa["id"]: a for qa, a in zip(items, answers, strict=True)})
    return {"exact": scores["exact"], "f1": scores["f1"]}


def compare(task: str, model: str, hf: Path, labels: list[str], results: dict, work: Path) -> dict:
    """Each server's answers against `muppets predict` on the same file and against the
    pipeline's (mapped to our label names), with each one's dev score."""
    if task == "classify":
        written = muppets_predict(model, SST2_DEV, work / "sst2-dev-predictions.tsv")
        expected = [line.split("\t")[1] for line in written.splitlines()[1:]]
        id2label = json.loads((hf / "config.json").read_text())["id2label"]
        index = {name: int(i) for i, name in id2label.items()}
    else:
        written = json.loads(muppets_predict(model, XQUAD, work / "xquad-predictions.json"))
        expected = [written[qid] for qid, _, _ in xquad_questions()]
    got = {}
    for name, found in ((n, r["answers"]) for n, r in results.items()):
        if task == "classify":  # the pipeline names labels by config.json's id2label
            mine = [labels[index[r["label"]]] if name == PIPELINE else r["label"] for r in found]
        else:  # the pipeline's spans keep the whitespace its offsets cover
            mine = [r["answer"].strip() if name == PIPELINE else r["answer"] for r in found]
        got[name] = mine
    servers = {}
    for name, answers in got.items():
        servers[name] = {
            "same_as_predict": sum(a == b for a, b in zip(answers, expected, strict=True)),
            "same_as_pipeline": sum(a == b for a, b in zip(answers, got[PIPELINE], strict=True)),
            "dev": dev_score(task, answers),
        }
    return {"examples": len(expected), "servers": servers}


def print_report(report: dict) -> None:
    print(
        f"\n{report['machine']}, {report['threads']} thread(s) per server; load average "
        f"{report['load_average_before']:.1f} before, {report['load_average_after']:.1f} after"
    )
    print(
        f"{'task':<9}{'backend':>10}{'conc':>5} | {'ours req/s':>10} {'p50':>7} {'p95':>7} "
        f"{'p99':>7} | {'pipe req/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} | {'ratio':>6} | "
        "CPU ms/req"
    )
    for task, found in report["tasks"].items():
        theirs_all = found["levels"][PIPELINE]
        for backend in (name for name in found["levels"] if name != PIPELINE):
            for ours, theirs in zip(found["levels"][backend], theirs_all, strict=True):
                ratio = ours["throughput"] / theirs["throughput"]
                print(
                    f"{task:<9}{backend:>10}{ours['concurrency']:>5} | "
                    f"{ours['throughput']:>10.1f} {ours['p50_ms']:>7.1f} {ours['p95_ms']:>7.1f} "
                    f"{ours['p99_ms']:>7.1f} | {theirs['throughput']:>10.1f} "
                    f"{theirs['p50_ms']:>7.1f} {theirs['p95_ms']:>7.1f} {theirs['p99_ms']:>7.1f} "
                    f"| {ratio:>5.2f}x | {ours['cpu_ms_per_request']:.1f} / "
                    f"{theirs['cpu_ms_per_request']:.1f}"
                )
        for name, server in found["servers"].items():
            dev = ", ".join(f"{k} {v:.2f}" for k, v in server["dev"].items())
            print(
                f"{task} {name}: dev {dev}; {server['same_as_predict']}/{found['examples']} "
                f"answers identical to muppets predict's, {server['same_as_pipeline']} to the "
                "pipeline's"
            )
    if "overload" in report:
        o = report["overload"]
        print(
            f"overload: {o['clients']} clients x 10 requests, queue {o['queue']}: statuses "
            f"{o['statuses']}; RSS {o['rss_before_kib'] / 1024:.0f} MiB before, peak "
            f"{o['rss_peak_kib'] / 1024:.0f} MiB; alive {o['alive']}, after: {o['after']}, "
            f"exit {o['exit']}"
        )
