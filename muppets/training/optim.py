"""AdamW with BERT's weight-decay exclusions, and learning-rate schedules as pure functions.

BERT (google-research/bert, optimization.py) decays every weight except `LayerNorm` and `bias`.
We decide by shape and name instead of by a list of spellings: a parameter with fewer than two
dimensions (every bias, every LayerNorm/RMSNorm gain and shift, ELMo's ScalarMix weights) or whose
name has a part containing "norm" gets no weight decay; every matrix - embeddings included, as in
BERT - gets it. Tied weights appear once in `named_parameters()`, so they sit in one group.

The schedule is a pure function of the step (`lr_factor`); the loop sets `group["lr"]` before each
optimizer step, so there is no scheduler object whose state could drift from the step on resume.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

SCHEDULES = ("linear", "cosine", "constant")


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether AdamW should apply weight decay to this parameter (see the module docstring)."""
    if param.ndim < 2:
        return False
    return not any("norm" in part.lower() for part in name.split("."))


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: [decayed matrices, non-decayed biases and norms], each in parameter order;
    with `layer_decay` < 1, that pair for each learning-rate multiplier (`lr_scale`,
    layer_lr_scales), from the top of the model down."""
    scale = layer_lr_scales(model, layer_decay)
    groups: dict[tuple[float, bool], list] = {(1.0, True): [], (1.0, False): []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((scale(name), decays(name, param)), []).append(param)
    order = sorted(groups, key=lambda key: (-key[0], not key[1]))
    return [
        {"params": groups[key], "weight_decay": weight_decay if key[1] else 0.0, "lr_scale": key[0]}
        for key in order
        if groups[key] or key[0] == 1.0
    ]


def layer_lr_scales(model: nn.Module, layer_decay: float):
    """name -> learning-rate multiplier: layer-wise decay as ELECTRA fine-tunes
    (google-research/electra, model/optimization.py, `_get_layer_lrs`): with L encoder layers,
    the embeddings (and `embeddings_project`) are at depth 0, layer i at depth i + 1, everything
    else at L + 2 (the task head; BERT's pooler too, which ELECTRA lacks); the multiplier is
    layer_decay ** (L + 2 - depth), so the top layer gets layer_decay ** 2, as there."""
    names = [name for name, _ in model.named_parameters()]
    layers = {int(m.group(1)) for n in names if (m := LAYER.search(n))}
    top = len(layers) + 2

    def scale(name: str) -> float:
        if layer_decay == 1.0:
            return 1.0
        if (m := LAYER.search(name)) is not None:
            depth = int(m.group(1)) + 1
        elif EMBEDDINGS.search(name):
            depth = 0
        else:
            depth = top
        return layer_decay ** (top - depth)

    return scale


LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")
EMBEDDINGS = re.compile(r"(?:^|\.)encoder\.(?:embeddings|embeddings_project)\.")


def build_optimizer(
    model: nn.Module,
    learning_rate: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    layer_decay: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW with BERT's defaults (lr 1e-4, betas 0.9/0.999, eps 1e-6, weight decay 0.01).

    The fused kernel is used on CPU and CUDA. Measured with torch 2.13 on 2 CPU cores, BERT-mini
    sized parameters (11M in 69 tensors), interleaved runs, median ms/step: fused 12, foreach 46,
    for-loop (the CPU default) 50 - fused is ~4x faster, and kept that ratio with 1 thread and
    under load. On CUDA fused is the fastest of the three as well.
    """
    on_supported_device = {p.device.type for p in model.parameters()} <= {"cpu", "cuda"}
    return torch.optim.AdamW(
        param_groups(model, weight_decay, layer_decay),
        lr=learning_rate,
        betas=betas,
        eps=eps,
        fused=True if on_supported_device else None,
    )


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate for the optimizer step with 0-based index `step`.

    Warmup: (step + 1) / warmup_steps, so the first step already learns (BERT and Hugging Face
    start at 0 and waste it). After warmup, with p = (step - W) / (T - W) going 0 -> 1:
    linear 1 - p (BERT's polynomial decay with power 1, reaching 0 at step T), cosine
    (1 + cos(pi p)) / 2, constant 1.
    """
    return Schedule(schedule, warmup_steps, total_steps).factor(step)


@dataclass(frozen=True)
class Schedule:
    """Warmup then decay over `total_steps`, re-planned in place when a time budget re-estimates
    the run's length, so the learning rate never jumps.

    A re-plan before step r (`restart_step`) keeps what was already taken and stretches or
    shrinks what is left: in warmup, the ramp goes on from the last factor used (`restart_value`)
    to 1 at the new warmup's end; in decay, the progress p goes on from its last value
    (`restart_value`) to 1 at the new total. So the factor is continuous, and after warmup it never
    rises. Never re-planned (restart_step 0), it is `lr_factor`'s schedule exactly.
    """

    name: str
    warmup_steps: int
    total_steps: int
    restart_step: int = 0
    restart_value: float = 0.0  # factor (in warmup) or progress (in decay) of step restart_step-1

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; valid: {', '.join(SCHEDULES)}")

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate for the step with 0-based index `step`."""
        W, r, v = self.warmup_steps, self.restart_step, self.restart_value
        if step < W:  # r < W here: a ramp from v after step r - 1 to 1 at step W - 1
            return v + (1 - v) * (step - r + 1) / (W - r)
        if self.name == "constant":
            return 1.0
        p = self.progress(step)
        if self.name == "linear":
            return 1.0 - p
        return 0.5 * (1.0 + math.cos(math.pi * p))

    def progress(self, step: int) -> float:
        """How far the decay is, 0 -> 1, at the step with 0-based index `step` (>= warmup)."""
        W, T, r, v = self.warmup_steps, self.total_steps, self.restart_step, self.restart_value
        if r <= W:  # decay never re-planned: p = (step - W) / (T - W)
            return min(1.0, (step - W) / max(1, T - W))
        return min(1.0, v + (1 - v) * (step - r + 1) / max(1, T - r + 1))

    def replanned(self, step: int, total_steps: int, warmup_steps: int) -> Schedule:
        """The schedule for steps `step`, `step + 1`, ... of a run now `total_steps` long.

        `warmup_steps` (the configured warmup for the new length) applies only while warmup is not
        over; a warmup already done stays done.
        """
        W = self.warmup_steps
        if step < W:  # still warming up: ramp from the last factor to the new warmup's end
            W = max(warmup_steps, step)
            last = self.factor(step - 1) if step > 0 else 0.0
            return Schedule(self.name, W, max(total_steps, W), step, last if step < W else 0.0)
        if step == W:  # decay not begun: it simply spans the new length
            return Schedule(self.name, W, max(total_steps, W), step, 0.0)
        last = self.progress(step - 1)
        return Schedule(self.name, W, max(total_steps, step), step, last)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Write the scheduled learning rate into every parameter group (times its `lr_scale`)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)
