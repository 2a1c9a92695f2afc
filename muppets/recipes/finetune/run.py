"""`muppets finetune`: task + pretrained encoder + head -> train() -> the best model on dev.

Devlin et al. 2019 (https://arxiv.org/abs/1810.04805) section 4 and appendix A.3: all weights
fine-tuned with Adam, a learning rate in {5e-5, 3e-5, 2e-5}, a few epochs, warmup over 10% of the
steps then linear decay, weight decay 0.01, a batch of 32, and the best model on dev kept. Runs
are noisy on small sets, so several seeds are run and their median reported (section 4.1 reruns
BERT-large "with random restarts"). `--freeze` trains only the head on frozen encoder features
(the feature-based approach of section 5.3).

Every run directory `<out>/seed-<s>/` is a fine-tuned checkpoint (encoder.py) plus
metrics.json, metrics.jsonl, loss.png and dev_metric.png, and the dev predictions of the best
model. `--task glue` runs every GLUE task found under --data into `<out>/<task>/` and prints the
standard table (glue.json beside it). `--downstream bilstm|bag-of-embeddings` trains a small task
model over frozen ELMo features (or `--model random-embeddings`) instead: features.py. Both paths
run each seed through seeds.py; the options are config.py's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from functools import partial
from pathlib import Path

from muppets.errors import ConfigError, InputError
from muppets.recipes.finetune.config import FinetuneConfig
from muppets.recipes.finetune.curves import (
    check_sizes,
    classes_seen,
    format_curve,
    parse_train_sizes,
    plot_curve,
    size_name,
    subset,
    subset_indices,
)
from muppets.recipes.finetune.encoder import encoder_parts, prepare_encoder_task
from muppets.recipes.finetune.features import downstream_parts, prepare_downstream
from muppets.recipes.finetune.hyperparameters import (
    candidate_name,
    candidates,
    choose,
    finite,
    resolved,
    spread,
    varying_keys,
)
from muppets.recipes.finetune.seeds import run_seed, shown_score
from muppets.tasks.registry import (
    GLUE,
    TASKS,
    find_test_file,
    split_path,
    task_spec,
    training_labels,
)
from muppets.training.device import pick_device

__all__ = ["FinetuneConfig", "finetune", "finetune_task"]


def finetune(config: FinetuneConfig) -> dict:
    """Every seed of the task (or of every GLUE task found); returns {task: summary}."""
    arithmetic = config.arithmetic.start(pick_device(config.device))  # once for every run
    config = dataclasses.replace(config, arithmetic=arithmetic)
    if config.task != "glue":
        return {config.task: finetune_task(config, config.task, Path(config.out))}
    if not config.data:
        raise ConfigError("--task glue needs --data DIR (holding CoLA/, SST-2/, ...)")
    found = [t for t in GLUE if _has_glue_files(t, config.data)]
    if not found:
        raise InputError("no GLUE task folder with train and dev files here", config.data)
    results = {t: finetune_task(config, t, Path(config.out) / t) for t in found}
    if config.train_sizes:  # each task has its learning curve instead of one GLUE row
        return results
    rows = glue_rows(results)
    table = format_table(rows)
    print("\n" + table)
    (Path(config.out) / "glue.json").write_text(json.dumps(rows, indent=2) + "\n")
    (Path(config.out) / "glue.txt").write_text(table + "\n")
    return results


def _has_glue_files(task: str, data: str) -> bool:
    try:
        return all(split_path(TASKS[task], data, s) for s in ("train", *TASKS[task].dev_splits))
    except InputError:
        return False


def finetune_task(config: FinetuneConfig, name: str, out: Path) -> dict:
    """Read and featurize once, then train one model per seed (per candidate of a listed
    hyperparameter, per --train-sizes subset); summary.json holds the medians."""
    spec, columns = task_spec(name), config.columns()
    sizes = parse_train_sizes(config.train_sizes)
    grid = candidates(config)
    varying = varying_keys(grid)
    for size in sizes or [None]:  # refuse before any work, not after the first seed
        for candidate in grid:
            where = _candidate_dir(out / size_name(size) if sizes else out, candidate, varying)
            for seed in config.seed_list():
                if (where / f"seed-{seed}").exists() and any((where / f"seed-{seed}").iterdir()):
                    raise InputError(
                        "not empty: fine-tune into a new --out", where / f"seed-{seed}"
                    )
    train_path = Path(config.train_file or split_path(spec, config.data, "train"))
    if config.dev_file:  # MNLI: it replaces dev_matched
        dev_paths = {spec.dev_splits[0]: Path(config.dev_file)}
    else:
        dev_paths = {split: split_path(spec, config.data, split) for split in spec.dev_splits}
    dev_paths.update(find_test_file(spec, config.data, dev_paths))  # CoNLL: test.txt, on every path
    labels = list(config.labels or []) or training_labels(spec, train_path, columns, config.errors)
    if config.downstream:  # frozen ELMo features (or the random-embeddings baseline)
        data = prepare_downstream(config, name, train_path, dev_paths, labels)
        parts = downstream_parts
    else:
        data = prepare_encoder_task(config, name, train_path, dev_paths, labels)
        parts = encoder_parts
    if not sizes:
        return select(config, grid, parts, data, name, out)
    total = len(data.train_examples)
    check_sizes(sizes, total, train_path)
    rows = []
    for size in sizes:
        indices = subset_indices(total, size, config.train_size_seed)
        part = subset(data, indices)
        seen = classes_seen(part.train_examples)
        classes = "" if seen is None else f", {seen} of {len(labels)} classes"
        print(f"{name}: {len(indices):,} of {total:,} training examples{classes}")
        summary = select(config, grid, parts, part, name, out / size_name(size))
        row = {
            "train_size": "all" if size is None else size,
            "train_examples": len(indices),
            "classes_seen": seen,
            "scores": summary["scores"],
            **spread(summary["scores"]),
            "best_seed": summary["best_seed"],
            "hyperparameters": summary["hyperparameters"],
            "dir": size_name(size),
        }
        rows.append(row)
    curve = {
        "task": name,
        "metric": spec.metric,
        "train_size_seed": config.train_size_seed,
        "train_examples": total,
        "curve": rows,
    }
    (out / "summary.json").write_text(json.dumps(curve, indent=2) + "\n")
    table = format_curve(rows, spec.metric, spec.percent)
    (out / "learning_curve.txt").write_text(table + "\n")
    plot_curve(rows, spec.metric, f"{name}: {config.model}", out / "learning_curve.png")
    print(f"\n{name}: dev {spec.metric} by training-set size\n{table}")
    return curve


def _candidate_dir(out: Path, candidate: dict, varying: list[str]) -> Path:
    return out / candidate_name(candidate, varying) if varying else out


def select(config: FinetuneConfig, grid: list[dict], parts, data, name: str, out: Path) -> dict:
    """Every candidate runs every seed; the best median dev score wins (Devlin et al. appendix
    A.3). One candidate writes what a single run always wrote: <out>/seed-<s>/, summary.json."""
    spec, varying, results = task_spec(name), varying_keys(grid), []
    for candidate in grid:
        resolved_config = resolved(config, candidate)
        where = _candidate_dir(out, candidate, varying)
        build = partial(parts, resolved_config, data)
        runs = {
            seed: run_seed(resolved_config, build, seed, where / f"seed-{seed}")
            for seed in config.seed_list()
        }
        scores = {seed: run["score"] for seed, run in runs.items()}
        results.append((candidate, runs, scores))
        if varying:
            shown = shown_score(spec, statistics.median(scores.values()))
            label = candidate_name(candidate, varying)
            print(f"{name} {label}: median dev {spec.metric} {shown}")
    chosen = choose([statistics.median(scores.values()) for _, _, scores in results])
    candidate, runs, scores = results[chosen]
    best_seed = max(scores, key=lambda s: finite(scores[s]))
    summary = {
        "task": name,
        "metric": spec.metric,
        "scores": scores,
        "median": statistics.median(scores.values()),
        "best_seed": best_seed,
        "hyperparameters": candidate,
        "precision": config.arithmetic.precision,
        "runs": runs,
    }
    if varying:  # the chosen candidate's best seed is promoted to <out>/best
        best_dir = _candidate_dir(out, candidate, varying) / f"seed-{best_seed}"
        shutil.copytree(best_dir, out / "best", dirs_exist_ok=True)
        summary["best_dir"] = str(best_dir.relative_to(out))
        summary["candidates"] = [
            {"name": candidate_name(c, varying), **c, **spread(s), "scores": s}
            for c, _, s in results
        ]
        print(f"{name}: chose {candidate_name(candidate, varying)} (best median dev {spec.metric})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = shown_score(spec, summary["median"])
    print(f"{name}: median dev {spec.metric} over {len(scores)} seed(s): {shown}")
    return summary


# ---------------------------------------------------------------- the GLUE table


def glue_rows(results: dict[str, dict]) -> list[dict]:
    """One row per GLUE dev set (MNLI: matched and mismatched): the median over seeds of each
    metric, in the units GLUE reports (x100)."""
    rows = []
    for task, summary in results.items():
        runs = list(summary["runs"].values())
        for split in runs[0]["dev"]:
            keys = [k for k in runs[0]["dev"][split] if k not in ("total", "missing")]
            name = {"dev_matched": "mnli-m", "dev_mismatched": "mnli-mm"}.get(split, task)
            medians = [100 * statistics.median(run["dev"][split][k] for run in runs) for k in keys]
            row = {"task": name, "metric": "/".join(keys), "dev": medians, "seeds": len(runs)}
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'task':<9} {'metric':<18} {'dev':>12}  seeds"]
    for row in rows:
        dev = "/".join(f"{v:.1f}" for v in row["dev"])
        lines.append(f"{row['task']:<9} {row['metric']:<18} {dev:>12}  {row['seeds']}")
    return "\n".join(lines)
