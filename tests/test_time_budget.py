"""A time budget that is spent: the run's length is re-estimated as the pace changes, the schedule
follows without a jump, and a resumed run goes on inside the same budget.

Time is a fake clock (budget.clock) that only the objective moves, so every number here is exact:
no real time is measured and nothing depends on the machine's load.
"""

import json

import pytest
from test_loop import CONFIG, ToyBatches, ToyMLM, ToyObjective, config

from muppets.training import budget
from muppets.training.logging import read_metrics
from muppets.training.loop import train
from muppets.training.optim import Schedule

BUDGET, PEAK = 100.0, 1e-2


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Paced(ToyObjective):
    """Each micro-batch costs `slow` fake seconds once the run is past `switch_at` seconds of
    this process, `fast` before (or the other way round)."""

    def __init__(self, clock: FakeClock, before: float, after: float, switch_at: float):
        super().__init__()
        self.clock, self.origin = clock, clock.now
        self.before, self.after, self.switch_at = before, after, switch_at

    def __call__(self, model, batch):
        spent = self.clock.now - self.origin
        self.clock.now += self.before if spent < self.switch_at else self.after
        return super().__call__(model, batch)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(budget, "clock", fake)
    return fake


def budget_config(**overrides):
    base = dict(max_steps=100_000, learning_rate=PEAK, warmup_steps=5, log_every=1)
    return config(**{**base, "time_budget_seconds": BUDGET, **overrides})


def final_state(out_dir, out) -> dict:
    path = out_dir / "checkpoints" / f"step-{out['step']:08d}" / "trainer_state.json"
    return json.loads(path.read_text())


def train_records(out_dir) -> list[dict]:
    return [r for r in read_metrics(out_dir / "metrics.jsonl") if r["event"] == "train"]


@pytest.mark.parametrize(
    "before, after, ideal",
    [(0.5, 1.0, 150), (1.0, 0.5, 150), (0.5, 0.5, 200)],
    ids=["slower", "faster", "steady"],
)
def test_the_budget_is_spent_when_the_pace_changes_halfway(tmp_path, clock, before, after, ideal):
    objective = Paced(clock, before, after, switch_at=BUDGET / 2)
    out = train(ToyMLM(), objective, ToyBatches(), budget_config(), tmp_path, config_dict=CONFIG)
    state = final_state(tmp_path, out)
    # Stopped within one slow step of the budget by the fake clock (fixing the length from the
    # first 11 steps, as before, would stop the "faster" run at 75 s, 25% early).
    assert BUDGET - 1.0 <= state["elapsed_seconds"] <= BUDGET + 1.0
    assert abs(out["step"] - ideal) <= 2 and out["stopped"] == "time_budget"
    assert state["schedule"]["total_steps_measured"]
    records = train_records(tmp_path)
    assert [r["step"] for r in records] == list(range(1, out["step"] + 1))
    # Each record holds the estimate it was trained under; the last one is the run's length.
    assert abs(records[-1]["total_steps"] - out["step"]) <= 1
    assert abs(records[50]["total_steps"] - ideal) > 3 or before == after  # it moved
    # The learning rate: warmup to the peak, then never up again, and ~0 at the end.
    lrs = [r["lr"] for r in records]
    assert lrs[:5] == pytest.approx([PEAK * (s + 1) / 5 for s in range(5)], rel=1e-12)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert lrs[-1] < 0.02 * PEAK


def test_cosine_follows_the_estimate_down_to_zero(tmp_path, clock):
    objective = Paced(clock, 1.0, 0.5, switch_at=BUDGET / 2)
    cfg = budget_config(schedule="cosine", warmup_steps=0, warmup_ratio=0.1)
    out = train(ToyMLM(), objective, ToyBatches(), cfg, tmp_path, config_dict=CONFIG)
    lrs = [r["lr"] for r in train_records(tmp_path)]
    peak_at = lrs.index(max(lrs))
    assert all(b >= a for a, b in zip(lrs[:peak_at], lrs[1 : peak_at + 1], strict=True))
    assert all(
        b <= a * (1 + 1e-12) for a, b in zip(lrs[peak_at:], lrs[peak_at + 1 :], strict=False)
    )
    assert max(lrs) == pytest.approx(PEAK) and lrs[-1] < 1e-3 * PEAK
    assert BUDGET - 1.0 <= final_state(tmp_path, out)["elapsed_seconds"] <= BUDGET + 1.0


def test_a_resumed_run_spends_the_rest_of_the_same_budget(tmp_path, clock):
    cfg = budget_config(save_every=20)
    first = ToyBatches(fail_at=90)  # preempted at step 91; the newest checkpoint is step 80
    with pytest.raises(RuntimeError, match="preempted"):
        train(ToyMLM(), Paced(clock, 0.5, 0.5, BUDGET), first, cfg, tmp_path, config_dict=CONFIG)
    saved = json.loads((tmp_path / "checkpoints/step-00000080/trainer_state.json").read_text())
    assert saved["elapsed_seconds"] == 40.0 and saved["schedule"]["total_steps"] == 200
    lr_before = train_records(tmp_path)[79]["lr"]

    clock.now = 5000.0  # a new process: the clock's origin means nothing
    slower = Paced(clock, 1.0, 1.0, BUDGET)
    out = train(
        ToyMLM(seed=3), slower, ToyBatches(), cfg, tmp_path, config_dict=CONFIG, resume=True
    )
    # 40 s spent before, 60 s left at the new pace (1 s a step): 60 steps more.
    assert out["step"] == 140 and out["stopped"] == "time_budget"
    assert BUDGET - 1.0 <= final_state(tmp_path, out)["elapsed_seconds"] <= BUDGET + 1.0
    records = train_records(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 141))
    lrs = [r["lr"] for r in records]
    # The first step after the resume follows the saved schedule: no jump at the resume.
    assert lrs[80] == pytest.approx(PEAK * Schedule("linear", 5, 200).factor(80))
    assert lrs[80] < lr_before
    assert all(b <= a * (1 + 1e-12) for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert lrs[-1] < 0.02 * PEAK


def test_the_estimate_uses_the_recent_pace():
    clock = budget.BudgetClock(budget_seconds=1000.0, max_steps=10_000)
    assert clock.observe(1, 1.0, first_of_process=True) is None  # the untimed warm-up step
    assert clock.observe(10, 5.5, first_of_process=False) is None  # 9 steps, 4.5 s: not yet
    # 10 steps in 5 s since the warm-up step: 0.5 s a step, 994 s left -> 1988 more.
    assert clock.observe(11, 6.0, first_of_process=False) == 11 + 1988
    # 2 steps but 21 s (2% of the budget is 20 s): due; 26 s over 12 steps, 973 s left.
    assert clock.observe(13, 27.0, first_of_process=False) == 13 + int(973 / (26 / 12))
    assert clock.observe(14, 27.5, first_of_process=False) is None
    capped = budget.BudgetClock(budget_seconds=1000.0, max_steps=50)
    capped.observe(1, 1.0, first_of_process=True)
    assert capped.observe(11, 2.0, first_of_process=False) == 50  # max_steps still bounds it
