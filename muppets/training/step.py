"""One optimizer step's gradients: k micro-batches on every rank, exactly one big batch's.

Each step counts the targets of all its k micro-batches on all ranks first, then backpropagates
sum_c loss_sum_c / N_c for each micro-batch, so k micro-batches of b equal one batch of k*b, and
N ranks equal one process with the same global batch (up to float rounding).

Under bf16/fp16 (training/precision.py) the forward and the loss run under autocast and the
backward outside it, into the fp32 master weights' gradients. fp16 scales the loss (GradScaler)
so that small gradients do not flush to zero, and unscales before measuring and clipping them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from muppets.training import distributed as dist
from muppets.training.precision import autocast


@dataclass
class StepResult:
    """What one step measured, the same on every rank."""

    names: list[str]  # loss components, sorted
    losses: list[float]  # global mean loss per component
    loss: float  # their sum
    tokens: int  # real tokens in the step, all ranks
    grad_norm: float  # before clipping
    elapsed: float  # run seconds at the step (mean over ranks, so every rank decides alike)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


def next_micro_batches(source, k: int, device: torch.device) -> list[dict] | None:
    """The step's k micro-batches on `device`; None when the data ends (a partial step is lost)."""
    try:
        return [to_device(next(source), device) for _ in range(k)]
    except StopIteration:
        return None


def compute_gradients(
    model: nn.Module,
    ddp_model: nn.Module,
    objective,
    micro: list[dict],
    max_grad_norm: float | None,
    elapsed: Callable[[], float],
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> StepResult:
    """Forward and backward over `micro`, gradients all-reduced and clipped; no optimizer step.

    `elapsed()`: the run's seconds so far, read once the backward is done. `precision`: the
    resolved one the forward runs in. `scaler` (fp16; with the `optimizer` it unscales): the
    gradient norm is that of the unscaled gradients, inf when the scaled ones overflowed.
    """
    device, world, k = next(model.parameters()).device, dist.world_size(), len(micro)
    # The step's targets and tokens, counted over all ranks.
    counts = [objective.count_targets(batch) for batch in micro]
    names = sorted(counts[0])
    local = [sum(int(c[name]) for c in counts) for name in names]
    local.append(sum(count_tokens(batch) for batch in micro))
    *totals, tokens = dist.all_reduce_sum(torch.tensor(local, device=device)).tolist()
    n_targets = {name: max(1, n) for name, n in zip(names, totals, strict=True)}

    # Forward/backward per micro-batch, each scaled by the whole step's target counts.
    step_losses = torch.zeros(len(names), dtype=torch.float64, device=device)
    for i, batch in enumerate(micro):
        # Under DDP, gradients are all-reduced only in the last micro-batch's backward.
        last = i == k - 1
        with nullcontext() if ddp_model is model or last else ddp_model.no_sync():
            with autocast(precision, device):
                sums = objective(ddp_model, batch)
                parts = torch.stack([sums[name].float() / n_targets[name] for name in names])
            # DDP averages gradients over ranks; x world turns that into the global sum.
            loss = parts.sum() * world
            (loss if scaler is None else scaler.scale(loss)).backward()
        step_losses += parts.detach()

    # One collective for the global loss per component and the run's elapsed time.
    clock = torch.tensor([elapsed()], dtype=torch.float64, device=device)
    reduced = dist.all_reduce_sum(torch.cat([step_losses, clock]))
    step_losses, seconds = reduced[:-1], reduced[-1].item() / world
    if scaler is not None and scaler.is_enabled():
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    max_norm = max_grad_norm or math.inf  # inf: measure the norm, scale by 1.0
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
    loss = step_losses.sum().item()
    return StepResult(names, step_losses.tolist(), loss, tokens, grad_norm, seconds)


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def count_tokens(batch: dict) -> int:
    """Real (non-padding) tokens: the attention mask's sum, else every input id."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel()
