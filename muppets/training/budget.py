"""Time budgets: the one place a duration such as "30m" becomes seconds, and the estimate of how
many steps fit in what is left of one (Cramming, Geiping & Goldstein 2022, sec. 2)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from muppets.errors import ConfigError


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h', '1h30m' or plain seconds -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ConfigError(f"time_budget {text!r} is not a duration such as 90s, 30m, 1h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


# The clock every time budget reads; a test swaps it for a fake one (monkeypatch budget.clock).
clock = time.perf_counter

ESTIMATE_EVERY = 10  # steps between re-estimates of the run's length (also the first probe)
ESTIMATE_SHARE = 0.02  # ... or this share of the budget, whichever comes first (slow steps)
# The rate is measured over the last RATE_WINDOW re-estimates, or more to span RATE_SHARE of the
# budget: a change of pace shows within a tenth of the budget, one slow step is averaged away.
RATE_WINDOW, RATE_SHARE = 5, 0.1


@dataclass
class BudgetClock:
    """Re-estimates how many steps fit in a time budget from the recent seconds per step.

    Marks are (step, elapsed seconds) pairs taken at each re-estimate; the rate is measured from
    the oldest one kept. The first step of a process is not timed (allocator warm-up); marks are
    not saved, so a resumed run measures afresh and keeps the saved schedule until it has.
    """

    budget_seconds: float
    max_steps: int
    marks: list[tuple[int, float]] = field(default_factory=list)

    def observe(self, step: int, elapsed: float, first_of_process: bool) -> int | None:
        """After `step` steps at `elapsed` seconds: the run's new length, when re-estimated now."""
        if first_of_process:  # the warm-up step: the rate starts after it
            self.marks = [(step, elapsed)]
            return None
        if not self.marks:
            return None
        last_step, last_elapsed = self.marks[-1]
        due = step - last_step >= ESTIMATE_EVERY
        due |= elapsed - last_elapsed >= ESTIMATE_SHARE * self.budget_seconds
        if not due:
            return None
        first_step, first_elapsed = self.marks[0]
        seconds_per_step = max(elapsed - first_elapsed, 1e-12) / (step - first_step)
        self.marks.append((step, elapsed))
        span = RATE_SHARE * self.budget_seconds
        while len(self.marks) > RATE_WINDOW + 1 and elapsed - self.marks[1][1] >= span:
            self.marks.pop(0)
        left = max(0.0, self.budget_seconds - elapsed)
        return max(step, min(self.max_steps, step + int(left / seconds_per_step)))
