"""The comparison's rows, each trained by `finetune` over the label budgets of the plan
(plan.py), and what the report says about each budget: the median score and its min-max over the
seeds, the learning rate chosen on dev, time, parameters trained / total.

A row calls `finetune` with `train_sizes` and `seeds`: the subsets are nested prefixes of one
permutation seeded by the quickstart's `--seed`, so every row sees the same sentences at a given
budget. A row that runs more seeds at some budgets than at others (the word-level rows: every
seed at the smallest budget, one above) makes one call per seed list, into `seeds-<list>/`.
The CoNLL-2003 rows (with --data-dir) are selected on dev and report test entity F1.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

from safetensors import safe_open

from muppets.data.readers.conll import read_conll
from muppets.quickstart.config import (
    CONLL_LABEL_BUDGETS,
    EARLY_STOPPING_PATIENCE,
    Inputs,
    QuickstartConfig,
    stage_shares,
)
from muppets.quickstart.plan import WORDPIECES_PER_WORD, Data, Plan, plan_comparison
from muppets.quickstart.stages import StageContext
from muppets.recipes.finetune.curves import parse_train_sizes
from muppets.recipes.finetune.hyperparameters import candidate_name
from muppets.recipes.finetune.run import FinetuneConfig, finetune
from muppets.training.options import from_options
from muppets.training.pretrained import resolve_checkpoint

# Row -> the quickstart stages it reads (stages.py redoes it when one of them is redone).
# Every row reads the shards stage's speed measurement (the plan's unit).
NEEDS = {
    "bert-finetuned": ("shards", "bert"),
    "bert-frozen": ("shards", "bert"),
    "bert-scratch": ("tokenizer", "shards"),
    "electra-finetuned": ("shards", "electra"),
    "elmo-bilstm": ("shards", "elmo"),
    "random-bilstm": ("shards",),
    "bag-of-embeddings": ("shards",),
}
CONLL_NEEDS = {
    "conll-bert-finetuned": ("shards", "bert"),
    "conll-bert-scratch": ("tokenizer", "shards"),
}


def row_needs(config: QuickstartConfig) -> dict[str, tuple[str, ...]]:
    """The rows of this run: the seven SST-2 rows (six with --no-electra), and the two CoNLL-2003
    rows with --data-dir."""
    rows = {k: v for k, v in NEEDS.items() if config.electra or k != "electra-finetuned"}
    return {**rows, **(CONLL_NEEDS if config.data_dir else {})}


def read_sst2(path: Path) -> tuple[str, list[str]]:
    """(header, non-empty lines) of a GLUE SST-2 tsv."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line for line in lines[1:] if line.strip()]


def majority_share(dev_file: Path) -> float:
    """Accuracy of always answering the most frequent dev label."""
    labels = [line.rsplit("\t", 1)[-1] for line in read_sst2(dev_file)[1]]
    return max(labels.count(label) for label in set(labels)) / len(labels)


def _tokens(word_counts: list[int]) -> float:
    """WordPiece tokens of texts of these word counts, [CLS] and [SEP] included (about)."""
    return sum(WORDPIECES_PER_WORD * n + 2 for n in word_counts)


def task_data(inputs: Inputs) -> dict[str, Data]:
    """SST-2's (and CoNLL-2003's) sizes for the estimate, by task name."""
    train = [len(line.split("\t")[0].split()) for line in read_sst2(inputs.sst2 / "train.tsv")[1]]
    dev = [len(line.split("\t")[0].split()) for line in read_sst2(inputs.sst2 / "dev.tsv")[1]]
    data = {"sst2": Data(len(train), _tokens(train) / max(len(train), 1), _tokens(dev))}
    if inputs.conll is not None:
        words = {}
        for split in ("train", "valid", "test"):
            words[split] = [len(s.words) for s in read_conll(inputs.conll / f"{split}.txt")]
        per = _tokens(words["train"]) / max(len(words["train"]), 1)
        data["conll2003"] = Data(len(words["train"]), per, _tokens(words["valid"] + words["test"]))
    return data


def comparison_plan(config: QuickstartConfig, inputs: Inputs, tokens_per_second: float) -> Plan:
    """The plan every row stage computes alike (a pure function of the same inputs)."""
    rows = list(row_needs(config))
    shares = stage_shares(bool(config.data_dir), config.lanes, config.electra)
    seconds = sum(shares[row] for row in rows) * config.budget_seconds
    data = task_data(inputs)
    by_row = {row: data["conll2003" if row.startswith("conll") else "sst2"] for row in rows}
    return plan_comparison(
        seconds,
        rows,
        by_row,
        config.budget_list(),
        config.seed_list(),
        len(config.bert_learning_rates.split(",")),
        config.max_epochs,
        tokens_per_second,
        parse_train_sizes(CONLL_LABEL_BUDGETS) if config.data_dir else (),
    )


def run_row(row: str, config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    """Fine-tune the row's planned budgets and seeds; one summary per label budget."""
    directory = ctx.directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    plan = comparison_plan(config, inputs, ctx.done["shards"]["bert_tokens_per_second"])
    planned = plan.runs.get(row, {})
    calls: dict[tuple[int, ...], list] = {}  # seed list -> the budgets run with it
    for budget, seeds in planned.items():
        calls.setdefault(tuple(seeds), []).append(budget)
    rates = config.bert_learning_rates.split(",")[: plan.rates.get(row, 1)]
    conll = row.startswith("conll")
    points = []
    for seeds, budgets in calls.items():
        out = directory / ("seeds-" + "-".join(map(str, seeds)))
        options = {
            **row_options(row, ctx.out, config.bert_model, rates),
            **task_files(row, inputs),
            "out": str(out),
            "seeds": ",".join(map(str, seeds)),
            "train_sizes": ",".join("all" if b is None else str(b) for b in budgets),
            "train_size_seed": config.seed,
            "epochs": config.max_epochs,
            "early_stopping_patience": EARLY_STOPPING_PATIENCE,
            "device": config.device,
            "precision": config.precision,
            "force_precision": config.force_precision,
        }
        finetune_config = from_options(FinetuneConfig, **options)
        curve = finetune(finetune_config)[finetune_config.task]
        varying = ["learning_rate"] if len(rates) > 1 else []
        for point in curve["curve"]:
            points.append(summarize(row, point, out, ctx.out, varying, finetune_config, conll))
    points.sort(key=lambda p: p["train_examples"])
    return {"points": points, "plan_notes": plan.notes, "plan_seconds": plan.seconds}


def task_files(row: str, inputs: Inputs) -> dict:
    if row.startswith("conll"):  # valid.txt selects, test.txt is scored (find_test_file)
        return {"task": "conll2003", "data": str(inputs.conll)}
    sst2 = inputs.sst2
    return {
        "task": "sst2",
        "train_file": str(sst2 / "train.tsv"),
        "dev_file": str(sst2 / "dev.tsv"),
    }


def row_options(row: str, out: Path, bert_model: str, rates: list[str]) -> dict:
    """FinetuneConfig fields of each row. BERT: the rates of BERT_LEARNING_RATES, chosen on dev
    (small BERTs take larger rates than BERT-base's 2e-5..5e-5, Turc et al. 2019), and the same
    for the ELECTRA discriminator (finetune reads it from the run, under its head); a frozen
    BERT's [CLS] pooler only learnt NSP, so its head reads the mean of the last layer. The ELMo
    and embedding rows read SST-2's own words (the file is already tokenized) and keep
    finetune's defaults for their task models; the ELMo row feeds the biLSTM [word vectors;
    ELMo], as Peters et al. 2018 (section 3.3) add ELMo to a task model: ELMo alone from a biLM
    this small loses to plain word vectors (bench/RESULTS.md)."""
    rate = ",".join(rates)
    if row in ("bert-finetuned", "conll-bert-finetuned"):
        return {"model": str(out / "bert"), "learning_rate": rate}
    if row == "electra-finetuned":  # the BERT rows' rates; pooling: ELECTRA's own head (default)
        return {"model": str(out / "electra"), "learning_rate": rate}
    if row == "bert-frozen":
        frozen = {"freeze": True, "learning_rate": "1e-3", "pooling": "mean"}
        return {"model": str(out / "bert"), **frozen}
    if row in ("bert-scratch", "conll-bert-scratch"):
        return {"model": bert_model, "tokenizer": str(out / "tokenizer"), "learning_rate": rate}
    words = {"whitespace_tokens": True}
    if row == "elmo-bilstm":
        elmo = {"model": str(out / "elmo"), "elmo_word_embeddings": True}
        return {**elmo, "downstream": "bilstm", **words}
    if row == "random-bilstm":
        return {"model": "random-embeddings", "downstream": "bilstm", **words}
    return {"model": "random-embeddings", "downstream": "bag-of-embeddings", **words}


def summarize(row, point, out, run_out, varying, config, conll) -> dict:
    """One label budget of a row, from finetune's curve point and the seeds' metrics.json."""
    size_dir = out / point["dir"]
    chosen = point["hyperparameters"]
    where = size_dir / candidate_name(chosen, varying) if varying else size_dir
    metrics = {
        int(s): json.loads((where / f"seed-{s}" / "metrics.json").read_text(encoding="utf-8"))
        for s in point["scores"]
    }
    # CoNLL: selected on dev (valid.txt), reported on test; SST-2: dev (its test has no labels).
    scores = {s: m["test"]["f1"] if conll else m["score"] for s, m in metrics.items()}
    best = max(scores, key=lambda s: scores[s])
    trained, total = count_parameters(row, where / f"seed-{best}", run_out)
    seconds = sum(
        json.loads(p.read_text(encoding="utf-8"))["elapsed_seconds"]
        for p in size_dir.glob("**/seed-*/metrics.json")
    )
    values = list(scores.values())
    summary = {
        "budget": point["train_size"],
        "train_examples": point["train_examples"],
        "metric": "test entity F1" if conll else "dev accuracy",
        "scores": {str(s): v for s, v in scores.items()},
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "seeds": len(values),
        "learning_rate": chosen["learning_rate"] or config.downstream_learning_rate,
        "epochs": chosen["epochs"],
        "best_epochs": {str(s): m["best_epoch"] for s, m in metrics.items()},
        "steps": {str(s): m["steps"] for s, m in metrics.items()},
        "train_seconds": seconds,
        "trained_parameters": trained,
        "total_parameters": total,
        "run": str(where),
    }
    if conll:
        summary["dev_scores"] = {str(s): m["score"] for s, m in metrics.items()}
    candidates = json.loads((size_dir / "summary.json").read_text()).get("candidates")
    if candidates:
        summary["candidates"] = candidates
    return summary


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
