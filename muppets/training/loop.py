"""The training loop: one function, written out top to bottom as named steps.

Contracts, duck-typed so any model family and any objective fit:
  objective(model, batch)        -> {component: loss SUM over the micro-batch's targets}
  objective.count_targets(batch) -> {component: number of targets in the micro-batch}
  objective.metrics(model, batch)-> {"<c>_loss_sum" | "<c>_correct" | "<c>_count": number}
  batches: an iterator of micro-batches (dict of tensors) with state_dict() / load_state_dict().
The objective must run the forward as `model(...)`: under DDP the gradient hooks live in the
wrapper's __call__. Every rank's source must yield the same number of micro-batches.

`train` is a loop over: the step (step.py: exact gradient accumulation over micro-batches and
ranks), the time budget's re-estimate, a log record, an evaluation, a save, a stop decision. All
that changes lives in one `LoopState` (state.py), which is also what a checkpoint saves.

`TrainConfig.precision` is a resolved one (training/precision.py; the recipe resolves it at the
run's start): the forward, the loss and the evaluations run under its autocast, the weights, their
gradients and the optimizer state stay fp32, and so do the checkpoints. fp16 adds a GradScaler: a
step whose scaled gradients overflowed is skipped by it (its scale halves), not taken for
divergence.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from muppets.errors import ConfigError, TrainingError
from muppets.training import checkpoint as ckpt
from muppets.training import distributed as dist
from muppets.training import logging as log
from muppets.training.optim import SCHEDULES, build_optimizer, set_learning_rate
from muppets.training.precision import autocast
from muppets.training.state import LoopState, Run, new_state, resumed_state, save, seed_everything
from muppets.training.step import StepResult, compute_gradients, next_micro_batches, to_device

INIT_SCALE = 2.0**16  # fp16's first loss scale (torch's default); it halves at each overflow


@dataclass
class TrainConfig:
    """One optimizer step = gradient_accumulation_steps micro-batches on every rank.

    time_budget_seconds (Cramming, Geiping & Goldstein 2022, sec. 2): the run's length is set by
    the clock. The first step is not timed (allocator warm-up); then every 10 steps (or 2% of the
    budget) the run's length becomes min(max_steps, steps that fit in what is left of the budget
    at the recent seconds per step: budget.BudgetClock). The schedule is re-planned to end at
    each new estimate without a jump (optim.Schedule.replanned), so it decays to 0 as the budget
    is spent, on a machine that gets busier or quieter as well. The estimate is saved in the
    checkpoint and logged as "total_steps". Training also stops if the clock runs out first.
    (Cramming makes the schedule a function of elapsed/budget at every step; ours moves only at
    the re-estimates, each a pure function of the step after it, so a checkpoint holds it whole.)
    """

    max_steps: int = 1_000_000
    learning_rate: float = 1e-4
    schedule: str = "linear"  # linear | cosine | constant, after warmup
    warmup_steps: int = 10_000
    warmup_ratio: float | None = None  # when set: warmup = ratio * total steps
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    max_grad_norm: float | None = 1.0  # None: no clipping
    layer_lr_decay: float = 1.0  # optim.layer_lr_scales
    gradient_accumulation_steps: int = 1
    log_every: int = 100
    eval_every: int = 10_000  # 0: only at the end
    save_every: int = 10_000  # 0: only at the end
    keep_checkpoints: int = 2
    time_budget_seconds: float | None = None
    seed: int = 0
    # With evaluate_fn (fine-tuning): the score that selects the best model, saved to <out>/best.
    best_metric: str | None = None
    best_mode: str = "max"  # max | min: which way is better
    early_stopping_patience: int = 0  # stop after this many evaluations without a best; 0: never
    # The divergence guard (guard.py): a loss over this x its recent median stops the run.
    loss_spike_factor: float | None = 10.0  # None: only a non-finite loss or gradient stops it
    # The arithmetic of the forward passes, resolved (precision.py): fp32, bf16 or fp16.
    precision: str = "fp32"

    def __post_init__(self):
        ratio, budget, norm = self.warmup_ratio, self.time_budget_seconds, self.max_grad_norm
        rules = [
            ("max_steps", self.max_steps >= 1, ">= 1"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("schedule", self.schedule in SCHEDULES, "one of " + ", ".join(SCHEDULES)),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("warmup_ratio", ratio is None or 0 <= ratio < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("adam_beta1", 0 <= self.adam_beta1 < 1, "in [0, 1)"),
            ("adam_beta2", 0 <= self.adam_beta2 < 1, "in [0, 1)"),
            ("adam_epsilon", self.adam_epsilon > 0, "> 0"),
            ("max_grad_norm", norm is None or norm > 0, "> 0 (or None for no clipping)"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("save_every", self.save_every >= 0, ">= 0"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1"),
            ("time_budget_seconds", budget is None or budget > 0, "> 0"),
            ("best_mode", self.best_mode in ("max", "min"), "max or min"),
            ("early_stopping_patience", self.early_stopping_patience >= 0, ">= 0"),
            (
                "loss_spike_factor",
                self.loss_spike_factor is None or self.loss_spike_factor > 1,
                "> 1",
            ),
            ("precision", self.precision in ("fp32", "bf16", "fp16"), "fp32, bf16 or fp16"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if budget is None and ratio is None and self.warmup_steps > self.max_steps:
            raise ConfigError(
                f"warmup_steps ({self.warmup_steps}) must be <= max_steps ({self.max_steps})"
            )

    def warmup_for(self, total_steps: int) -> int:
        if self.warmup_ratio is not None:
            return round(self.warmup_ratio * total_steps)
        return min(self.warmup_steps, total_steps)


def train(
    model: nn.Module,
    objective,
    batches,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    config_dict: dict,
    eval_batches_fn=None,
    resume: bool = False,
    resume_from: str | Path | None = None,
    extra_files=(),
    evaluate_fn=None,
    restart: str = "--init-from {checkpoint} and a lower --learning-rate",
) -> dict:
    """Train `model` in place; checkpoints, metrics.jsonl and loss.png go to `out_dir`.

    `config_dict`: the model config, saved as config.json and checked on resume (from the newest
    checkpoint, or from `resume_from`, one of the run's: the newer ones are moved aside).
    `eval_batches_fn`: returns a fresh iterable of this rank's eval batches. `extra_files`: copied
    into every checkpoint (tokenizer files). Under torchrun, call
    `distributed.init_distributed()` first.
    `evaluate_fn(model) -> {name: number}`: task scores (dev accuracy, F1, ...) added to each eval
    record; it must give the same numbers on every rank. With `config.best_metric`, each new best
    model is written to `out_dir/best` (model files only), and `early_stopping_patience`
    evaluations without a new best end the run (stopped: "early_stopping").
    A diverging loss stops the run with a TrainingError naming the checkpoint to restart from
    and how (`restart`, formatted with {checkpoint}), or the best model so far.
    """
    out_dir, rank = Path(out_dir), dist.rank()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    # Per-rank seeds: dropout differs across ranks; the weights are rank 0's (DDP broadcasts them).
    seed_everything(config.seed + rank)
    betas = (config.adam_beta1, config.adam_beta2)
    optimizer = build_optimizer(
        model,
        config.learning_rate,
        betas,
        config.adam_epsilon,
        config.weight_decay,
        config.layer_lr_decay,
    )
    run = Run(
        model=model,
        ddp_model=model,  # wrapped once the weights are final (after a resume)
        objective=objective,
        batches=batches,
        optimizer=optimizer,
        config=config,
        config_dict=config_dict,
        out_dir=out_dir,
        extra_files=tuple(extra_files),
        eval_batches_fn=eval_batches_fn,
        evaluate_fn=evaluate_fn,
        rank=rank,
        world=dist.world_size(),
        device=next(model.parameters()).device,
        restart=restart,
        scaler=torch.amp.GradScaler(
            next(model.parameters()).device.type,
            init_scale=INIT_SCALE,
            enabled=config.precision == "fp16",
        ),
    )
    state = resumed_state(run, resume_from) if resume or resume_from else new_state(run)
    run = dataclasses.replace(run, ddp_model=dist.wrap_ddp(model))
    bar = log.progress_bar(state.schedule.total_steps, state.step, enabled=rank == 0)
    source = iter(batches)
    if state.step >= state.schedule.total_steps:
        state.stop_reason = "max_steps"
    model.train()
    while state.stop_reason is None:
        micro = next_micro_batches(source, config.gradient_accumulation_steps, run.device)
        if micro is None:
            state.stop_reason = "data_exhausted"  # a partial last step is dropped
            break
        result, lr = take_step(run, state, micro, bar)
        ending = follow_budget(run, state, result, bar)
        if state.step % config.log_every == 0 or ending:
            log_step(run, state, result, lr, bar)
        if run.evaluating and config.eval_every and state.step % config.eval_every == 0:
            run_evaluation(run, state)
        if config.save_every and state.step % config.save_every == 0:
            save(run, state)
        state.stop_reason = stop_decision(run, state, ending)

    # The end (max_steps, time budget, early stopping or data exhausted): evaluate and save
    # unless just done.
    if run.evaluating and state.evaluated_at != state.step:
        run_evaluation(run, state)
    if state.saved_at != state.step:
        save(run, state)
    bar.close()
    if rank == 0 and run.metrics_path.exists():
        log.plot_losses(run.metrics_path, out_dir / "loss.png")
    return {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "train_loss": state.loss,
        "eval": state.eval_metrics,
        "best": state.best,
        "checkpoint": str(state.last_checkpoint) if state.last_checkpoint else None,
        "stopped": state.stop_reason,
        "elapsed_seconds": state.elapsed_now(),
        "precision": config.precision,
    }


def take_step(run: Run, state: LoopState, micro: list[dict], bar) -> tuple[StepResult, float]:
    """One optimizer step at the schedule's learning rate; refuses a non-finite loss or gradient."""
    lr = run.config.learning_rate * state.schedule.factor(state.step)
    set_learning_rate(run.optimizer, lr)
    clip, clock, precision = run.config.max_grad_norm, state.elapsed_now, run.config.precision
    model, scaler, optimizer = run.model, run.scaler, run.optimizer
    result = compute_gradients(
        model, run.ddp_model, run.objective, micro, clip, clock, precision, scaler, optimizer
    )
    # fp16: scaled gradients that overflowed are the scaler's to skip (it halves its scale), not
    # a diverging run; the loss itself is still checked.
    overflow = run.scaler.is_enabled() and not math.isfinite(result.grad_norm)
    diverging = state.guard.check(state.step, result.loss, 0.0 if overflow else result.grad_norm)
    if diverging:
        bar.close()  # the update is not applied and nothing is saved
        under = "" if precision == "fp32" else f" (under {precision})"
        raise TrainingError(
            f"step {state.step + 1}: {diverging}{under}: diverging, stopped before this update; "
            + restart_advice(run, state)
        )
    run.scaler.step(run.optimizer)  # without a scaler (not fp16): optimizer.step()
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    state.window.add(result.losses, result.tokens, result.elapsed - state.elapsed)
    state.step, state.tokens_seen = state.step + 1, state.tokens_seen + result.tokens
    state.loss, state.elapsed = result.loss, result.elapsed
    return result, lr


def restart_advice(run: Run, state: LoopState) -> str:
    """Where to go on from: the best model so far (model selection), else the newest sane
    checkpoint on disk (guard.py) and the flag that restarts from it."""
    if run.config.best_metric is not None:
        if state.best is None:
            return "no best model yet (no evaluation before this step)"
        best, metric = state.best, run.config.best_metric
        where = f"step {best['step']}, {metric} {best['value']:.4g}"
        return f"best model so far: {run.out_dir / 'best'} ({where})"
    sane = state.guard.sane_checkpoint()
    if sane is None:
        return f"no checkpoint in {run.roots} had a sane loss"
    step, loss, kind = sane
    path = run.roots / f"step-{step:08d}"
    flag = run.restart.format(checkpoint=path)
    return (
        f"last sane checkpoint: {path} (step {step}, {kind} loss {loss:.4g}); restart with {flag}"
    )


def follow_budget(run: Run, state: LoopState, result: StepResult, bar) -> str | None:
    """Re-estimate a time-budgeted run's length and re-plan the schedule to end there.

    Returns why the run ends at this step ("time_budget", "max_steps"), or None.
    """
    config, budget = run.config, state.budget
    if budget is not None:
        first = state.step == state.start_step + 1
        total = budget.observe(state.step, result.elapsed, first_of_process=first)
        if total is not None and total != state.schedule.total_steps:
            warmup = config.warmup_for(total)
            state.schedule = state.schedule.replanned(state.step, total, warmup)
            bar.total = state.schedule.total_steps
        state.measured = state.measured or total is not None
        if result.elapsed >= config.time_budget_seconds:
            return "time_budget"
    if state.step >= state.schedule.total_steps:
        return "time_budget" if budget is not None and state.measured else "max_steps"
    return None


def log_step(run: Run, state: LoopState, result: StepResult, lr: float, bar) -> None:
    """The train record of the steps since the last one (the window), to metrics.jsonl."""
    record = {"event": "train", "step": state.step, **state.window.record(result.names)}
    tokens_per_second = record.pop("tokens_per_second")
    record.update(lr=lr, grad_norm=result.grad_norm)
    record.update(tokens=state.tokens_seen, tokens_per_second=tokens_per_second)
    record.update(elapsed_seconds=result.elapsed)
    if state.budget is not None:
        record["total_steps"] = state.schedule.total_steps
    if run.scaler.is_enabled():  # fp16: the scale the next step runs at (halved by an overflow)
        record["loss_scale"] = run.scaler.get_scale()
    if run.rank == 0:
        log.append_metrics(run.metrics_path, record)
    log.show_progress(bar, state.step - bar.n, record["loss"], tokens_per_second)


def run_evaluation(run: Run, state: LoopState) -> None:
    """Objective metrics and/or evaluate_fn's scores, logged; keeps the best model."""
    config, scores = run.config, {}
    if run.eval_batches_fn is not None:
        batches, precision = run.eval_batches_fn(), config.precision
        scores.update(evaluate(run.model, run.objective, batches, run.device, precision))
    if run.evaluate_fn is not None:
        scores.update(run.evaluate_fn(run.model))
    if config.best_metric is not None:
        if config.best_metric not in scores:
            valid = ", ".join(sorted(scores))
            raise ConfigError(f"best_metric {config.best_metric!r} is not one of: {valid}")
        value, best = float(scores[config.best_metric]), state.best
        sign = 1.0 if config.best_mode == "max" else -1.0
        # The first evaluation is a best; NaN never beats a number.
        if best is None or math.isnan(best["value"]) or sign * (value - best["value"]) > 0:
            state.best, state.bad_evals = {"step": state.step, "value": value}, 0
            if run.rank == 0:
                best_dir = run.out_dir / "best"
                ckpt.save_pretrained(best_dir, run.model, run.config_dict, run.extra_files)
            dist.barrier()
        else:
            state.bad_evals += 1
    if run.rank == 0:
        log.append_metrics(run.metrics_path, {"event": "eval", "step": state.step, **scores})
    state.eval_metrics, state.evaluated_at = scores, state.step


def stop_decision(run: Run, state: LoopState, ending: str | None) -> str | None:
    """Early stopping after an evaluation without a new best for `patience` of them, else
    the end that the step found (time budget, length), else None: go on."""
    patience = run.config.early_stopping_patience
    if patience and state.evaluated_at == state.step and state.bad_evals >= patience:
        return "early_stopping"
    return ending


@torch.no_grad()
def evaluate(
    model: nn.Module, objective, batches, device: torch.device, precision: str = "fp32"
) -> dict[str, float]:
    """Sum objective.metrics over this rank's batches and over all ranks, then take ratios.

    "<c>_loss" = <c>_loss_sum / <c>_count and "<c>_accuracy" = <c>_correct / <c>_count for every
    component c; "loss" is the sum of the component losses, comparable to the training loss. An
    objective with `summarize(sums) -> {name: number}` adds what it makes of the global sums.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for batch in batches:
        with autocast(precision, device):
            metrics = objective.metrics(model, to_device(batch, device))
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    model.train(was_training)
    keys = sorted(sums)
    local = torch.tensor([sums[key] for key in keys], dtype=torch.float64, device=device)
    totals = dist.all_reduce_sum(local)
    sums = dict(zip(keys, totals.tolist(), strict=True))
    out: dict[str, float] = {}
    for key in keys:
        if key.endswith("_count"):
            c, count = key[: -len("_count")], max(sums[key], 1.0)
            if f"{c}_loss_sum" in sums:
                out[f"{c}_loss"] = sums[f"{c}_loss_sum"] / count
            if f"{c}_correct" in sums:
                out[f"{c}_accuracy"] = sums[f"{c}_correct"] / count
    out["loss"] = sum(v for key, v in out.items() if key.endswith("_loss"))
    if hasattr(objective, "summarize"):  # figures that are not ratios (ELECTRA's AUC)
        out.update(objective.summarize(sums))
    return out
