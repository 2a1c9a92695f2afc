"""The training loop: one function, written out top to bottom.

Contracts, duck-typed so any model family and any objective fit:
  objective(model, batch)        -> {component: loss SUM over the micro-batch's targets}
  objective.count_targets(batch) -> {component: number of targets in the micro-batch}
  objective.metrics(model, batch)-> {"<c>_loss_sum" | "<c>_correct" | "<c>_count": number}
  batches: an iterator of micro-batches (dict of tensors) with state_dict() / load_state_dict().
The objective must run the forward as `model(...)`: under DDP the gradient hooks live in the
wrapper's __call__. Every rank's source must yield the same number of micro-batches.

Exactness: each step counts the targets of all its k micro-batches on all ranks first, then
backpropagates sum_c loss_sum_c / N_c for each micro-batch, so k micro-batches of b equal one
batch of k*b, and N ranks equal one process with the same global batch (up to float rounding).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muppets.errors import ConfigError, InputError, TrainingError
from muppets.training import checkpoint as ckpt
from muppets.training import distributed as dist
from muppets.training import logging as log
from muppets.training.optim import SCHEDULES, build_optimizer, lr_factor, set_learning_rate

PROBE_STEPS = 10  # steps timed (after the first) to derive max_steps from time_budget_seconds


@dataclass
class TrainConfig:
    """One optimizer step = gradient_accumulation_steps micro-batches on every rank.

    time_budget_seconds (Cramming, Geiping & Goldstein 2022, sec. 2): the run's length is set by
    the clock. The first step is not timed (allocator warm-up); the next PROBE_STEPS are, and
    max_steps becomes min(max_steps, steps that fit in what is left of the budget). The schedule
    then decays to 0 exactly at the derived step, and the derived length is saved in the
    checkpoint, so a resumed run follows the same schedule. Training also stops if the clock runs
    out first. (Cramming instead makes the schedule a function of elapsed/budget; that ties the
    learning rate of every step to machine load, so runs could not be reproduced or resumed.)
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
    extra_files=(),
    evaluate_fn=None,
) -> dict:
    """Train `model` in place; checkpoints, metrics.jsonl and loss.png go to `out_dir`.

    `config_dict`: the model config, saved as config.json and checked on resume. `eval_batches_fn`:
    returns a fresh iterable of this rank's eval batches. `extra_files`: copied into every
    checkpoint (tokenizer files). Call `distributed.init_distributed()` first under torchrun.
    `evaluate_fn(model) -> {name: number}`: task scores (dev accuracy, F1, ...) added to each eval
    record; it must give the same numbers on every rank. With `config.best_metric`, each new best
    model is written to `out_dir/best` (model files only), and `early_stopping_patience`
    evaluations without a new best end the run (stopped: "early_stopping").
    """
    out_dir, rank, world = Path(out_dir), dist.rank(), dist.world_size()
    roots, metrics_path = out_dir / "checkpoints", out_dir / "metrics.jsonl"
    device, k = next(model.parameters()).device, config.gradient_accumulation_steps
    budget = config.time_budget_seconds
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Per-rank seeds: dropout differs across ranks; the weights are rank 0's (DDP broadcasts them).
    seed_everything(config.seed + rank)
    betas = (config.adam_beta1, config.adam_beta2)
    optimizer = build_optimizer(
        model, config.learning_rate, betas, config.adam_epsilon, config.weight_decay
    )
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    best, bad_evals = None, 0  # {"step", "value"} of the best evaluation; evaluations since
    total_steps, measured = config.max_steps, budget is None
    saved = ckpt.checkpoints(roots)
    last_checkpoint = saved[-1] if saved else None
    if resume:
        if last_checkpoint is None:
            raise InputError("nothing to resume: no checkpoint in this directory", roots)
        state = ckpt.load_checkpoint(last_checkpoint, model, optimizer, config_dict)
        step, tokens_seen = state["step"], state["tokens_seen"]
        best, bad_evals = state.get("best"), state.get("bad_evals", 0)
        elapsed_before = state["elapsed_seconds"]
        if budget is not None and state["schedule"]["total_steps_measured"]:
            total_steps, measured = state["schedule"]["total_steps"], True
        mine = ckpt.rank_state(state, rank, world, last_checkpoint)
        batches.load_state_dict(mine["data"])
        if mine["rng"] is not None:
            ckpt.set_rng_state(mine["rng"])
        else:  # another world size: not bitwise; fresh streams, unlike those of step 0
            seed_everything(config.seed + rank + 1_000_003 * step)
        if rank == 0:
            log.truncate_metrics(metrics_path, step)  # steps after the checkpoint are redone
            old, new = state["train_config"], dataclasses.asdict(config)
            changed = {key: [old.get(key), new[key]] for key in new if old.get(key) != new[key]}
            log.append_metrics(metrics_path, {"event": "resume", "step": step, "changed": changed})
    elif last_checkpoint is not None:
        raise InputError("holds checkpoints of an earlier run: resume it or use a new one", roots)

    def save(step: int, tokens_seen: int, total_steps: int, measured: bool) -> Path:
        """Checkpoint on rank 0, with every rank's data position and RNG states."""
        schedule = {"name": config.schedule, "warmup_steps": config.warmup_for(total_steps)}
        schedule.update(total_steps=total_steps, total_steps_measured=measured)
        state = {"step": step, "tokens_seen": tokens_seen, "schedule": schedule}
        state.update(elapsed_seconds=elapsed_before + time.perf_counter() - start_time)
        state.update(train_config=dataclasses.asdict(config), world_size=world)
        state.update(best=best, bad_evals=bad_evals)
        state["ranks"] = dist.all_gather_objects(
            {"data": batches.state_dict(), "rng": ckpt.rng_state()}
        )
        target = roots / f"step-{step:08d}"
        if rank == 0:
            keep = config.keep_checkpoints
            ckpt.save_checkpoint(
                roots, step, model, config_dict, optimizer, state, extra_files, keep
            )
        dist.barrier()  # no rank reads or reports the checkpoint before it exists
        return target

    def run_eval(step: int) -> dict:
        """Objective metrics and/or evaluate_fn's scores, logged; keeps the best model."""
        nonlocal best, bad_evals
        scores = {}
        if eval_batches_fn is not None:
            scores.update(evaluate(model, objective, eval_batches_fn(), device))
        if evaluate_fn is not None:
            scores.update(evaluate_fn(model))
        if config.best_metric is not None:
            if config.best_metric not in scores:
                valid = ", ".join(sorted(scores))
                raise ConfigError(f"best_metric {config.best_metric!r} is not one of: {valid}")
            value = float(scores[config.best_metric])
            sign = 1.0 if config.best_mode == "max" else -1.0
            # The first evaluation is a best; NaN never beats a number.
            if best is None or math.isnan(best["value"]) or sign * (value - best["value"]) > 0:
                best, bad_evals = {"step": step, "value": value}, 0
                if rank == 0:
                    ckpt.save_pretrained(out_dir / "best", model, config_dict, extra_files)
                dist.barrier()
            else:
                bad_evals += 1
        if rank == 0:
            log.append_metrics(metrics_path, {"event": "eval", "step": step, **scores})
        return scores

    evaluating = eval_batches_fn is not None or evaluate_fn is not None
    patience = config.early_stopping_patience
    ddp_model = dist.wrap_ddp(model)
    source = iter(batches)
    bar = log.progress_bar(total_steps, step, enabled=rank == 0)
    start_step, start_time = step, time.perf_counter()
    log_loss, log_steps, log_tokens, log_time = None, 0, 0, start_time
    probe_time, loss, stop_reason, eval_metrics = start_time, math.nan, "max_steps", {}
    evaluated_at, saved_at = -1, step
    model.train()
    while step < total_steps:
        # 1. This step's k micro-batches; their targets and tokens counted over all ranks.
        try:
            micro = [_to_device(next(source), device) for _ in range(k)]
        except StopIteration:
            stop_reason = "data_exhausted"  # a partial last step is dropped
            break
        counts = [objective.count_targets(batch) for batch in micro]
        names = sorted(counts[0])
        local = [sum(int(c[name]) for c in counts) for name in names]
        local.append(sum(_count_tokens(batch) for batch in micro))
        *totals, tokens = dist.all_reduce_sum(torch.tensor(local, device=device)).tolist()
        n_targets = {name: max(1, n) for name, n in zip(names, totals, strict=True)}

        # 2. Forward/backward per micro-batch, each scaled by the whole step's target counts.
        warmup = config.warmup_for(total_steps)
        lr = config.learning_rate * lr_factor(step, config.schedule, warmup, total_steps)
        set_learning_rate(optimizer, lr)
        step_losses = torch.zeros(len(names), dtype=torch.float64, device=device)
        for i, batch in enumerate(micro):
            # Under DDP, gradients are all-reduced only in the last micro-batch's backward.
            last = i == k - 1
            with nullcontext() if ddp_model is model or last else ddp_model.no_sync():
                sums = objective(ddp_model, batch)
                parts = torch.stack([sums[name] / n_targets[name] for name in names])
                # DDP averages gradients over ranks; x world turns that into the global sum.
                (parts.sum() * world).backward()
            step_losses += parts.detach()

        # 3. One collective for the global loss per component and "is any rank out of time".
        elapsed = elapsed_before + time.perf_counter() - start_time
        out_of_time = float(budget is not None and elapsed >= budget)
        flag = torch.tensor([out_of_time], dtype=torch.float64, device=device)
        reduced = dist.all_reduce_sum(torch.cat([step_losses, flag]))
        step_losses, out_of_time = reduced[:-1], reduced[-1].item() > 0
        loss = step_losses.sum().item()
        max_norm = config.max_grad_norm or math.inf  # inf: measure the norm, scale by 1.0
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            bar.close()  # nothing is saved: the last good checkpoint stays the newest
            raise TrainingError(
                f"step {step + 1}: loss {loss}, gradient norm {grad_norm}; "
                f"last good checkpoint: {last_checkpoint or 'none'}"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, tokens_seen = step + 1, tokens_seen + tokens

        # 4. Time budget: derive the run's length from the time per step, once.
        now = time.perf_counter()
        if not measured and step == start_step + 1:
            probe_time = now
        elif not measured and step == start_step + 1 + PROBE_STEPS:
            left = budget - (elapsed_before + now - start_time)
            local = torch.tensor([(now - probe_time) / PROBE_STEPS, left], device=device)
            seconds, left = (dist.all_reduce_sum(local) / world).tolist()  # same on every rank
            total_steps = max(step, min(config.max_steps, step + int(left / seconds)))
            measured, bar.total = True, total_steps
        if out_of_time:
            total_steps, stop_reason = step, "time_budget"

        # 5. Log, evaluate, save.
        log_loss = step_losses if log_loss is None else log_loss + step_losses
        log_steps, log_tokens = log_steps + 1, log_tokens + tokens
        if step % config.log_every == 0 or step == total_steps:
            mean = (log_loss / log_steps).tolist()
            tokens_per_second = log_tokens / max(now - log_time, 1e-9)
            record = {"event": "train", "step": step, "loss": sum(mean)}
            record.update({f"loss_{name}": value for name, value in zip(names, mean, strict=True)})
            record.update(lr=lr, grad_norm=grad_norm)
            record.update(tokens=tokens_seen, tokens_per_second=tokens_per_second)
            record.update(elapsed_seconds=elapsed_before + now - start_time)
            if rank == 0:
                log.append_metrics(metrics_path, record)
            log.show_progress(bar, step - bar.n, sum(mean), tokens_per_second)
            log_loss, log_steps, log_tokens, log_time = None, 0, 0, now
        if evaluating and config.eval_every and step % config.eval_every == 0:
            eval_metrics, evaluated_at = run_eval(step), step
            if patience and bad_evals >= patience:
                total_steps, stop_reason = step, "early_stopping"
        if config.save_every and step % config.save_every == 0:
            last_checkpoint, saved_at = save(step, tokens_seen, total_steps, measured), step

    # 6. The end (max_steps, time budget or data exhausted): evaluate and save unless just done.
    if evaluating and evaluated_at != step:
        eval_metrics = run_eval(step)
    if saved_at != step:
        last_checkpoint = save(step, tokens_seen, total_steps, measured)
    bar.close()
    if rank == 0 and metrics_path.exists():
        log.plot_losses(metrics_path, out_dir / "loss.png")
    return {
        "step": step,
        "tokens_seen": tokens_seen,
        "train_loss": loss,
        "eval": eval_metrics,
        "best": best,
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
        "stopped": stop_reason,
        "elapsed_seconds": elapsed_before + time.perf_counter() - start_time,
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def _count_tokens(batch: dict) -> int:
    """Real (non-padding) tokens: the attention mask's sum, else every input id."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel()


@torch.no_grad()
def evaluate(model: nn.Module, objective, batches, device: torch.device) -> dict[str, float]:
    """Sum objective.metrics over this rank's batches and over all ranks, then take ratios.

    "<c>_loss" = <c>_loss_sum / <c>_count and "<c>_accuracy" = <c>_correct / <c>_count for every
    component c; "loss" is the sum of the component losses, comparable to the training loss.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for batch in batches:
        for key, value in objective.metrics(model, _to_device(batch, device)).items():
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
    return out
