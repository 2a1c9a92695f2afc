"""The six SST-2 models of the quickstart, each trained by `finetune` within its share of the
budget, and what the report says about each: dev accuracy, time, parameters trained / total.

FinetuneConfig has no time cap, so a run is sized before it starts (plan_finetune): as many
epochs as the estimate fits (up to max_epochs; early stopping may end it sooner), or a random
subset of the training sentences when not even one epoch fits. The estimate counts tokens (SST-2
words x WORDPIECES_PER_WORD, plus 2) at a fixed cost per token for each kind of run (COST), in
units of the BERT pretraining throughput measured on the same machine just before.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from muppets.quickstart.config import QuickstartConfig
from muppets.quickstart.stages import StageContext
from muppets.recipes.finetune.run import FinetuneConfig, finetune
from muppets.training.options import from_options
from muppets.training.pretrained import resolve_checkpoint

# Row -> the quickstart stages it reads (stages.py redoes it when one of them is redone).
NEEDS = {
    "bert-finetuned": ("bert",),
    "bert-frozen": ("bert",),
    "bert-scratch": ("tokenizer",),
    "elmo-bilstm": ("elmo",),
    "random-bilstm": (),
    "bag-of-embeddings": (),
}
WORDPIECES_PER_WORD = 1.25  # SST-2 words -> WordPiece tokens (about, for the estimate)
# Seconds per token of a run, as multiples of 1 / (BERT pretraining tokens per second): a
# training token, a dev token (one evaluation per epoch), and a token featurized once per run
# (the frozen ELMo's layers, cached). Measured on the bundled sample, 2 shared cores, 1 thread.
COST = {
    "bert-finetuned": (1.2, 0.5, 0.0),
    "bert-frozen": (0.3, 0.5, 0.0),
    "bert-scratch": (1.2, 0.5, 0.0),
    "elmo-bilstm": (1.0, 1.0, 2.0),
    "random-bilstm": (1.4, 1.0, 0.0),
    "bag-of-embeddings": (0.1, 0.2, 0.0),
}
MIN_EXAMPLES = 256


@dataclass(frozen=True)
class Plan:
    epochs: int
    train_examples: int  # of the training set's `available`
    available: int
    estimated_seconds: float


def plan_finetune(
    seconds: float,
    examples: int,
    tokens_per_example: float,
    dev_tokens: float,
    tokens_per_second: float,
    cost: tuple[float, float, float],
    max_epochs: int,
    max_examples: int = 0,
) -> Plan:
    """As many epochs (up to max_epochs) as fit in `seconds`; if not even one does, a subset of
    the training examples that fits (at least MIN_EXAMPLES). `cost`: seconds per train / dev /
    featurized token, in units of 1 / tokens_per_second."""
    train_cost, dev_cost, once_cost = (c / tokens_per_second for c in cost)
    n = min(examples, max_examples) if max_examples else examples

    def estimate(n: int, epochs: int) -> float:
        train = n * tokens_per_example
        featurized = (train + dev_tokens) * once_cost
        return featurized + epochs * (train * train_cost + dev_tokens * dev_cost)

    epochs = max_epochs
    while epochs > 1 and estimate(n, epochs) > seconds:
        epochs -= 1
    if estimate(n, 1) > seconds:  # a fraction of one epoch: fewer examples
        fixed = estimate(0, 1)
        per_example = (estimate(n, 1) - fixed) / max(n, 1)
        n = min(n, max(MIN_EXAMPLES, int((seconds - fixed) / per_example)))
    return Plan(epochs, n, examples, estimate(n, epochs))


def read_sst2(path: Path) -> tuple[str, list[str]]:
    """(header, non-empty lines) of a GLUE SST-2 tsv."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line for line in lines[1:] if line.strip()]


def majority_share(dev_file: Path) -> float:
    """Accuracy of always answering the most frequent dev label."""
    labels = [line.rsplit("\t", 1)[-1] for line in read_sst2(dev_file)[1]]
    return max(labels.count(label) for label in set(labels)) / len(labels)


def _tokens(lines: list[str]) -> float:
    """WordPiece tokens of SST-2 lines, [CLS] and [SEP] included (about)."""
    return sum(WORDPIECES_PER_WORD * len(line.split("\t")[0].split()) + 2 for line in lines)


def run_row(row: str, config: QuickstartConfig, sst2: Path, ctx: StageContext) -> dict:
    """Plan the row within the stage's seconds, fine-tune one seed into `<row>/run`, and summarise
    it for the report. The plan is sized by the BERT stage's throughput (it ran, or was skipped,
    before every row)."""
    directory, out, seed = ctx.directory, ctx.out, config.seed
    bert_model, device = config.bert_model, config.device
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    header, rows = read_sst2(sst2 / "train.tsv")
    dev_rows = read_sst2(sst2 / "dev.tsv")[1]
    tokens_per_example = _tokens(rows) / max(len(rows), 1)
    throughput = ctx.done["bert"]["tokens_per_second"]
    plan = plan_finetune(
        ctx.seconds,
        len(rows),
        tokens_per_example,
        _tokens(dev_rows),
        throughput,
        COST[row],
        config.max_epochs,
        config.max_train_examples,
    )
    train_file = sst2 / "train.tsv"
    if plan.train_examples < len(rows):  # a random subset, the same for every row
        subset = random.Random(seed).sample(rows, plan.train_examples)
        train_file = directory / "train.tsv"
        train_file.write_text("\n".join([header, *subset]) + "\n", encoding="utf-8")
    print(
        f"  {plan.train_examples:,} of {len(rows):,} training sentences, {plan.epochs} epoch(s), "
        f"about {plan.estimated_seconds:.0f}s"
    )
    results = finetune(
        from_options(
            FinetuneConfig,
            task="sst2",
            train_file=str(train_file),
            dev_file=str(sst2 / "dev.tsv"),
            out=str(directory / "run"),
            seeds=str(seed),
            epochs=plan.epochs,
            device=device,
            **row_options(row, out, bert_model),
        )
    )
    run = results["sst2"]["runs"][seed]  # score, best_epoch, stopped
    seed_dir = directory / "run" / f"seed-{seed}"
    # finetune() returns no step count or loop time: those two come from the seed's metrics.json.
    metrics = json.loads((seed_dir / "metrics.json").read_text(encoding="utf-8"))
    trained, total = count_parameters(row, seed_dir, out)
    return {
        "accuracy": run["score"],
        "train_seconds": metrics["elapsed_seconds"],
        "epochs": plan.epochs,
        "best_epoch": run["best_epoch"],
        "steps": metrics["steps"],
        "stopped": run["stopped"],
        "train_examples": plan.train_examples,
        "available_examples": len(rows),
        "dev_examples": len(dev_rows),
        "estimated_seconds": plan.estimated_seconds,
        "trained_parameters": trained,
        "total_parameters": total,
        "run": str(seed_dir),
    }


def row_options(row: str, out: Path, bert_model: str) -> dict:
    """FinetuneConfig fields of each row. BERT: lr 2e-4 (small BERTs take larger rates than
    BERT-base's 2e-5..5e-5, Turc et al. 2019); a frozen BERT's [CLS] pooler only learnt NSP, so
    its head reads the mean of the last layer. The ELMo and embedding rows read SST-2's own words
    (the file is already tokenized) and keep finetune's defaults for their task models; the ELMo
    row feeds the biLSTM [word vectors; ELMo], as Peters et al. 2018 (section 3.3) add ELMo to a
    task model: ELMo alone from a biLM this small loses to plain word vectors (bench/RESULTS.md)."""
    if row == "bert-finetuned":
        return {"model": str(out / "bert"), "learning_rate": 2e-4}
    if row == "bert-frozen":
        frozen = {"freeze": True, "learning_rate": 1e-3, "pooling": "mean"}
        return {"model": str(out / "bert"), **frozen}
    if row == "bert-scratch":
        return {"model": bert_model, "tokenizer": str(out / "tokenizer"), "learning_rate": 2e-4}
    words = {"whitespace_tokens": True}
    if row == "elmo-bilstm":
        elmo = {"model": str(out / "elmo"), "elmo_word_embeddings": True}
        return {**elmo, "downstream": "bilstm", **words}
    if row == "random-bilstm":
        return {"model": "random-embeddings", "downstream": "bilstm", **words}
    return {"model": "random-embeddings", "downstream": "bag-of-embeddings", **words}


def _numel(path: Path, keep=lambda name: True) -> int:
    with safe_open(path, framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if keep(k))


def count_parameters(row: str, seed_dir: Path, out: Path) -> tuple[int, int]:
    """(trained, total) parameters of a fine-tuned run, from its saved weights. A frozen BERT
    trains only what is outside `encoder.`; the ELMo row saves the mix and the task model only,
    and the frozen biLM adds its encoder (not its softmax, which fine-tuning never runs)."""
    weights = seed_dir / "model.safetensors"
    total = _numel(weights)
    if row == "bert-frozen":
        return _numel(weights, lambda k: not k.startswith("encoder.")), total
    if row == "elmo-bilstm":
        bilm = resolve_checkpoint(out / "elmo") / "model.safetensors"
        return total, total + _numel(bilm, lambda k: "softmax" not in k.split(".")[0])
    return total, total
