"""What a run is made of: `Run`, its fixed parts, and `LoopState`, all that the loop changes.

`LoopState` is the one mutable object of `loop.train`; the named steps (a step, an evaluation, a
save, a stop decision) take it and update it, and `trainer_state.json` is its saved form:
  step, tokens_seen, elapsed_seconds        where the run is
  schedule {name, warmup_steps, total_steps, total_steps_measured, restart_step, restart_value}
  best, bad_evals                           model selection and early stopping
  log_window {loss_sums, steps, tokens, seconds}  the partial sums of the next train record
  guard {history, checkpoints}              the divergence guard's recent losses (guard.py)
  train_config, world_size, ranks [{data, rng}], optimizer   (the last written by checkpoint.py)
  grad_scaler                               fp16 only: the loss scale and its growth tracker
The run's precision is train_config's (fp32 for checkpoints written before it was recorded).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muppets.errors import InputError, MuppetsError
from muppets.training import budget as time_budget
from muppets.training import checkpoint as ckpt
from muppets.training import distributed as dist
from muppets.training import logging as log
from muppets.training.guard import LossGuard
from muppets.training.optim import Schedule


@dataclass(frozen=True)
class Run:
    """The parts of a run that do not change while it trains."""

    model: nn.Module
    ddp_model: nn.Module  # `model` itself in a single process
    objective: object
    batches: object
    optimizer: torch.optim.Optimizer
    config: object  # loop.TrainConfig
    config_dict: dict
    out_dir: Path
    extra_files: tuple = ()
    eval_batches_fn: object = None
    evaluate_fn: object = None
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    restart: str = ""  # how the user restarts from a checkpoint ({checkpoint}), for loop's errors
    scaler: torch.amp.GradScaler | None = None  # enabled for fp16 only (precision.py)

    @property
    def roots(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def evaluating(self) -> bool:
        return self.eval_batches_fn is not None or self.evaluate_fn is not None


@dataclass
class LoopState:
    """Everything `train` changes as it runs (saved fields first, then this process's own)."""

    schedule: Schedule
    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0  # seconds spent by the earlier processes of this run
    measured: bool = False  # whether a time budget has estimated the run's length yet
    best: dict | None = None  # {"step", "value"} of the best evaluation
    bad_evals: int = 0  # evaluations since the best
    window: log.LogWindow = field(default_factory=log.LogWindow)
    guard: LossGuard = field(default_factory=LossGuard)  # recent losses, checkpoints' losses
    # This process only:
    budget: time_budget.BudgetClock | None = None
    start_step: int = 0
    start_time: float = 0.0
    elapsed: float = 0.0  # at the last step, the same on every rank
    loss: float = math.nan  # the last step's training loss
    eval_metrics: dict = field(default_factory=dict)
    stop_reason: str | None = None
    last_checkpoint: Path | None = None
    evaluated_at: int = -1
    saved_at: int = 0

    def elapsed_now(self) -> float:
        return self.elapsed_before + time_budget.clock() - self.start_time


PRECISION_BEFORE = {"precision": "fp32"}  # what checkpoints from before it was recorded ran in


def recorded_precision(out_dir: str | Path, named: str | Path | None = None) -> str | None:
    """The precision of the run in `out_dir` as its checkpoint to resume (the newest, or `named`)
    recorded it; None where there is none to read (resumed_state says why, if it matters)."""
    saved = ckpt.checkpoints(Path(out_dir) / "checkpoints")
    directory = Path(named) if named is not None else saved[-1] if saved else None
    if directory is None:
        return None
    try:
        text = (directory / ckpt.TRAINER_STATE).read_text(encoding="utf-8")
        train_config = dict(json.loads(text)["train_config"])
    except (TypeError, OSError, ValueError, KeyError):
        return None
    return {**PRECISION_BEFORE, **train_config}["precision"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def fresh_schedule(config) -> Schedule:
    """The schedule of a run `config.max_steps` long (a time budget re-plans it as it measures)."""
    return Schedule(config.schedule, config.warmup_for(config.max_steps), config.max_steps)


def new_state(run: Run) -> LoopState:
    """Step 0, or the refusal to overwrite an earlier run's checkpoints."""
    if ckpt.checkpoints(run.roots):
        message = "holds checkpoints of an earlier run: resume it or use a new one"
        raise InputError(message, run.roots)
    if run.rank == 0:  # records of an attempt killed before its first checkpoint
        run.metrics_path.unlink(missing_ok=True)
    return _started(LoopState(schedule=fresh_schedule(run.config)), run)


def resumed_state(run: Run, named: str | Path | None = None) -> LoopState:
    """Model, optimizer, data position, RNG and loop state from the newest checkpoint, or from
    `named`, one of the run's (the newer ones are moved aside first: see `rewind`)."""
    saved = ckpt.checkpoints(run.roots)
    if not saved:
        raise InputError("nothing to resume: no checkpoint in this directory", run.roots)
    config, directory = run.config, saved[-1] if named is None else rewind(run, saved, named)
    state = LoopState(schedule=fresh_schedule(config), last_checkpoint=directory)
    try:
        saved_state = ckpt.load_checkpoint(directory, run.model, run.optimizer, run.config_dict)
        mine = ckpt.rank_state(saved_state, run.rank, run.world, directory)
        run.batches.load_state_dict(mine["data"])
    except MuppetsError as error:
        older = saved[: saved.index(directory)]
        if not older or not isinstance(error, InputError):
            raise
        raise InputError(  # a damaged newest checkpoint: the older one is a flag away
            f"{error.message}; the older checkpoint {older[-1]} is still there: add "
            f"--resume-from {older[-1]} to continue from it",
            error.path,
            error.line,
        ) from None
    state.step, state.tokens_seen = saved_state["step"], saved_state["tokens_seen"]
    state.best, state.bad_evals = saved_state.get("best"), saved_state.get("bad_evals", 0)
    state.elapsed_before = saved_state["elapsed_seconds"]
    state.window = log.LogWindow(**saved_state.get("log_window", {}))
    state.guard.load_state_dict(saved_state.get("guard", {}))
    if run.scaler is not None and run.scaler.is_enabled() and "grad_scaler" in saved_state:
        run.scaler.load_state_dict(saved_state["grad_scaler"])
    schedule = saved_state["schedule"]
    if config.time_budget_seconds is not None and schedule["total_steps_measured"]:
        state.measured = True  # the budget's estimate so far; re-measured as this process runs
        state.schedule = Schedule(
            schedule["name"],
            schedule["warmup_steps"],
            schedule["total_steps"],
            schedule.get("restart_step", 0),
            schedule.get("restart_value", 0.0),
        )
    if mine["rng"] is not None:
        ckpt.set_rng_state(mine["rng"])
    else:  # another world size: not bitwise; fresh streams, unlike those of step 0
        seed_everything(config.seed + run.rank + 1_000_003 * state.step)
    if run.rank == 0:
        log.truncate_metrics(run.metrics_path, state.step)  # steps after it are redone
        old = {**PRECISION_BEFORE, **saved_state["train_config"]}
        new = dataclasses.asdict(config)
        changed = {key: [old.get(key), new[key]] for key in new if old.get(key) != new[key]}
        record = {"event": "resume", "step": state.step, "changed": changed}
        log.append_metrics(run.metrics_path, record)
        if changed:  # said where it is seen, not only in metrics.jsonl
            shown = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
            print(f"resume: step {state.step} of {directory} with {shown}", flush=True)
    return _started(state, run)


def rewind(run: Run, saved: list[Path], named: str | Path) -> Path:
    """The run's checkpoint `named`; the checkpoints after it move to
    checkpoints-after-<step>/ (kept, but no longer what --resume takes or rotation removes)."""
    found = [p for p in saved if p.resolve() == Path(named).resolve()]
    if not found:
        names = ", ".join(p.name for p in saved)
        raise InputError(f"not a checkpoint of the run in {run.out_dir} (it has {names})", named)
    directory, newer = found[0], saved[saved.index(found[0]) + 1 :]
    if newer and run.rank == 0:
        aside = run.out_dir / f"checkpoints-after-{directory.name.split('-')[1]}"
        if aside.exists():
            raise InputError("is in the way of the newer checkpoints: move it first", aside)
        aside.mkdir()
        for path in newer:
            path.rename(aside / path.name)
        print(f"resume: {len(newer)} newer checkpoint(s) moved to {aside}", flush=True)
    dist.barrier()
    return directory


def _started(state: LoopState, run: Run) -> LoopState:
    state.start_step, state.saved_at = state.step, state.step
    state.guard.factor = run.config.loss_spike_factor
    state.start_time = time_budget.clock()
    state.elapsed = state.elapsed_before
    budget = run.config.time_budget_seconds
    if budget is None:
        state.measured = True  # the length is the configured one
    else:
        state.budget = time_budget.BudgetClock(budget, run.config.max_steps)
    return state


def save(run: Run, state: LoopState) -> Path:
    """Checkpoint on rank 0, with every rank's data position and RNG states."""
    config, schedule = run.config, state.schedule
    held_out = state.eval_metrics.get("loss") if state.evaluated_at == state.step else None
    sane = state.guard.saved(state.step, held_out, config.keep_checkpoints)
    trainer_state = {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "schedule": {
            "name": schedule.name,
            "warmup_steps": schedule.warmup_steps,
            "total_steps": schedule.total_steps,
            "total_steps_measured": state.measured,
            "restart_step": schedule.restart_step,
            "restart_value": schedule.restart_value,
        },
        "elapsed_seconds": state.elapsed_now(),
        "train_config": dataclasses.asdict(config),
        "world_size": run.world,
        "best": state.best,
        "bad_evals": state.bad_evals,
        "log_window": dataclasses.asdict(state.window),
        "guard": state.guard.state_dict(),
    }
    if run.scaler is not None and run.scaler.is_enabled():
        trainer_state["grad_scaler"] = run.scaler.state_dict()
    trainer_state["ranks"] = dist.all_gather_objects(
        {"data": run.batches.state_dict(), "rng": ckpt.rng_state()}
    )
    target = run.roots / f"step-{state.step:08d}"
    if run.rank == 0:
        ckpt.save_checkpoint(
            run.roots,
            state.step,
            run.model,
            run.config_dict,
            run.optimizer,
            trainer_state,
            run.extra_files,
            config.keep_checkpoints,
            protect=sane,
        )
    dist.barrier()  # no rank reads or reports the checkpoint before it exists
    state.last_checkpoint, state.saved_at = target, state.step
    return target
