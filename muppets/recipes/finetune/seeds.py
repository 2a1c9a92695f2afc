"""One seed of a fine-tuning run, for both paths (an encoder with a head, or frozen features
under a small task model): train with dev evaluation, keep the best model, score it, write it.

A path brings what differs (`SeedParts`: the model, its objective and batches, how it scores a
split); this file does what is the same: the loop's TrainConfig, the best model promoted to the
run directory, the dev (and test) scores, the predictions file, metrics.json and the dev curve.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from muppets.data.task_features import EpochBatches
from muppets.tasks.prediction import numbers, write_predictions
from muppets.tasks.setup import TaskSetup
from muppets.training import logging as log
from muppets.training.checkpoint import load_weights
from muppets.training.logging import plot_dev_scores
from muppets.training.loop import TrainConfig, train
from muppets.training.options import Optimization

PREDICTION_FILES = {"span_qa": "dev_predictions.json", "tagging": "dev_predictions.txt"}


@dataclass
class SeedParts:
    """What one fine-tuning path brings to a seed's run."""

    setup: TaskSetup
    model: nn.Module  # on its device, initialised under the seed
    objective: Callable
    optimization: Optimization  # the recipe's, with the path's learning rate
    config_dict: dict  # saved as config.json beside the weights
    train_examples: int
    train_features: list
    collate: Callable[[list], dict]
    examples: dict[str, list]  # split -> examples: the dev splits, the first selects the best
    score: Callable[[nn.Module, str], tuple[dict, object]]  # (model, split) -> scores, predictions
    save: Callable[[Path], None]  # the path's own files beside the weights (tokenizer, vocabulary)
    metrics: dict = field(default_factory=dict)  # the path's own metrics.json fields


def shown_score(spec, value: float) -> str:
    """A score as the task reports it: SQuAD's are percentages already, the rest fractions."""
    return f"{value:.2f}" if spec.percent else f"{100 * value:.2f}"


def run_seed(config, build: Callable[[int], SeedParts], seed: int, run_dir: Path) -> dict:
    """Train what `build(seed)` makes (torch seeded first) into run_dir; the seed's summary."""
    torch.manual_seed(seed)  # the head's (or the task model's) initial weights
    parts = build(seed)
    setup, spec = parts.setup, parts.setup.spec
    batches = EpochBatches(
        parts.train_features, config.batch_size, parts.collate, seed, config.run.epochs
    )
    per_epoch = batches.steps_per_epoch
    # finetune() resolved (and printed) it; the seed's model says on which device
    precision = config.arithmetic.resolve(next(parts.model.parameters()).device)
    train_config = TrainConfig(
        **parts.optimization.loop_options(),
        **config.run.loop_options(per_epoch),
        log_every=min(config.logging.log_every, per_epoch),
        save_every=0,
        keep_checkpoints=1,
        seed=seed,
        best_metric=spec.metric,
        precision=precision,
    )
    first = spec.dev_splits[0]

    def evaluate_fn(model: nn.Module) -> dict:
        return numbers(parts.score(model, first)[0])

    result = train(
        parts.model,
        parts.objective,
        batches,
        train_config,
        run_dir,
        config_dict=parts.config_dict,
        evaluate_fn=evaluate_fn,
    )
    result["stopped"] = stop_reason(result, train_config.max_steps)
    promote_best(parts.model, run_dir)
    parts.save(run_dir)

    final = {}
    for split, examples in parts.examples.items():
        final[split], predictions = parts.score(parts.model, split)
        if split == first:
            name = PREDICTION_FILES.get(setup.head, "dev_predictions.tsv")
            write_predictions(setup, examples, predictions, run_dir / name)
    test = final.pop("test", None)
    history = log.eval_history(run_dir / "metrics.jsonl", per_epoch)
    best = result["best"]
    metrics = {
        "task": setup.task,
        "seed": seed,
        "metric": spec.metric,
        "score": final[first][spec.metric],
        "best_step": best["step"],
        "best_epoch": best["step"] / per_epoch,
        "dev": final,
        "history": history,
        "train_examples": parts.train_examples,
        "train_features": len(parts.train_features),
        "steps": result["step"],
        "stopped": result["stopped"],
        **parts.metrics,
        "train_loss": result["train_loss"],
        "elapsed_seconds": result["elapsed_seconds"],
        "precision": precision,
    }
    if test is not None:
        metrics["test"] = test
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_dev_scores(history, spec.metric, run_dir / "dev_metric.png")
    task, metric = setup.task, spec.metric
    where = f"best at epoch {metrics['best_epoch']:.2f}, {result['stopped']}"
    print(f"{task} seed {seed}: dev {metric} {shown_score(spec, metrics['score'])} ({where})")
    if test is not None:
        print(f"{task} seed {seed}: test {metric} {shown_score(spec, test[metric])}")
    if "best_f1_thresh" in final[first]:  # SQuAD v2.0: evaluate-v2.0.py's best beside ours
        dev = final[first]
        best = f"best f1 {dev['best_f1']:.2f} at {dev['best_f1_thresh']:.3f}"
        print(f"{task} seed {seed}: null_threshold {dev['null_threshold']:g}; on dev, {best}")
    keys = ("score", "best_step", "best_epoch", "dev", "stopped", "test")
    return {k: metrics[k] for k in keys if k in metrics}


def stop_reason(result: dict, max_steps: int) -> str:
    """The loop's reason, except "early_stopping" when every step ran: the patience ran out at
    the last evaluation, which ends the run anyway."""
    if result["stopped"] == "early_stopping" and result["step"] >= max_steps:
        return "max_steps"
    return result["stopped"]


def promote_best(model: nn.Module, run_dir: Path) -> None:
    """The best model on dev becomes the run directory; the training checkpoint (for resume)
    goes."""
    load_weights(model, run_dir / "best")
    for name in ("config.json", "model.safetensors"):
        (run_dir / "best" / name).replace(run_dir / name)
    shutil.rmtree(run_dir / "best")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
