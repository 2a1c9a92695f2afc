"""The divergence guard: stop a run whose loss leaves its level, before it reaches NaN.

A step whose loss is more than `factor` x the run's level, or whose loss or gradient norm is not
finite, is refused before the optimizer applies it (so no checkpoint holds its update). The level
is the lowest median of `window` consecutive steps' losses seen so far: a run that climbs slowly
drags its recent median along, but not its best one. It is floored at 1 nat: a fine-tuning loss
near 0 would otherwise make one hard batch a "spike".

The guard also knows which checkpoints are sane, and keeps the newest sane one out of the rotation
(save_checkpoint's `protect`). A checkpoint's loss is its held-out loss when the run evaluated as
it saved, else the training loss of the step after it (the first computed on its weights); a sane
one is finite and within SANE x the level. A diverging run's newest checkpoints are often not
sane: their weights made the spike.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

MIN_HISTORY = 1  # steps seen before a spike is measured (a 10x rise after one is not noise)
FLOOR = 1.0  # nats: the smallest median a spike is measured against
SANE = 2.0  # a checkpoint whose loss is within 2x the median is one to restart from


@dataclass
class LossGuard:
    factor: float | None = 10.0  # None: only non-finite losses and gradients stop the run
    window: int = 20
    history: list[float] = field(default_factory=list)  # the last steps' losses, oldest first
    lowest: float | None = None  # the lowest median of the history so far
    # checkpoint step -> [loss of its weights or None until measured, "held-out" | "train"]
    checkpoints: dict[int, list] = field(default_factory=dict)

    def level(self) -> float:
        return math.inf if self.lowest is None else max(self.lowest, FLOOR)

    def check(self, step: int, loss: float, grad_norm: float) -> str | None:
        """Why the step that computed `loss` on the weights of `step` must not be applied, or
        None (then the loss joins the history). Measures the checkpoint of `step` if pending."""
        pending = self.checkpoints.get(step)
        if pending is not None and pending[0] is None:
            pending[0] = loss if math.isfinite(loss) else math.inf
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return f"loss {loss:.4g}, gradient norm {grad_norm:.4g}"
        if self.factor and len(self.history) >= MIN_HISTORY and loss > self.factor * self.level():
            return f"loss {loss:.4g} is over {self.factor:g}x the run's level {self.level():.4g}"
        self.history = [*self.history, loss][-self.window :]
        median = statistics.median(self.history)
        self.lowest = median if self.lowest is None else min(self.lowest, median)
        return None

    def saved(self, step: int, held_out: float | None, keep: int) -> int | None:
        """Record a checkpoint (its held-out loss if evaluated now); forget all but the newest
        `keep` and the newest sane one, as save_checkpoint does. Returns the sane one's step."""
        kind = "train" if held_out is None else "held-out"
        if held_out is not None and not math.isfinite(held_out):
            held_out = math.inf
        self.checkpoints[step] = [held_out, kind]
        sane = self.sane_checkpoint()
        kept = set(sorted(self.checkpoints)[-keep:]) | ({sane[0]} if sane else set())
        self.checkpoints = {s: self.checkpoints[s] for s in sorted(kept)}
        return sane[0] if sane else None

    def sane_checkpoint(self) -> tuple[int, float, str] | None:
        """(step, loss, kind) of the newest checkpoint whose weights had a sane loss."""
        bar = SANE * self.level()
        for step in sorted(self.checkpoints, reverse=True):
            loss, kind = self.checkpoints[step]
            if loss is not None and loss <= bar:
                return step, loss, kind
        return None

    def state_dict(self) -> dict:
        saved = {str(s): {"loss": v, "kind": k} for s, (v, k) in self.checkpoints.items()}
        for entry in saved.values():  # JSON has no inf: a non-finite loss is saved as "inf"
            entry["loss"] = "inf" if entry["loss"] == math.inf else entry["loss"]
        return {"history": list(self.history), "lowest": self.lowest, "checkpoints": saved}

    def load_state_dict(self, state: dict) -> None:
        self.history = [float(x) for x in state.get("history", [])]
        self.lowest = state.get("lowest")
        self.checkpoints = {}
        for step, entry in state.get("checkpoints", {}).items():
            loss = entry["loss"]
            self.checkpoints[int(step)] = [None if loss is None else float(loss), entry["kind"]]
