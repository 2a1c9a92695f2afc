"""What a run shows and leaves behind: a progress bar, `metrics.jsonl`, and a loss plot.

`metrics.jsonl` holds one JSON object per event, each with "event" and "step":
  {"event": "train", "step": 100, "loss": 7.1, "loss_mlm": 6.4, "loss_nsp": 0.7, "lr": 1e-4,
   "grad_norm": 1.3, "tokens": 51200, "tokens_per_second": 9000.0, "elapsed_seconds": 5.7,
   "total_steps": 4000}   (total_steps: the schedule's length, a time budget's current estimate)
  {"event": "eval", "step": 100, "loss": 7.0, "mlm_loss": 6.3, "mlm_accuracy": 0.1, ...}
  {"event": "resume", "step": 100, "changed": {"learning_rate": [0.0001, 0.0002]}}
Only rank 0 calls these. matplotlib is imported inside `plot_losses` so `import muppets` stays fast.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """Steps done out of `total`; tqdm's own ETA, loss and tokens/s in the postfix."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def show_progress(bar: tqdm, steps: int, loss: float, tokens_per_second: float) -> None:
    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_second:,.0f}", refresh=False)
    bar.update(steps)


@dataclass
class LogWindow:
    """The steps since the last train record: per-component loss sums, steps, tokens, seconds.

    Saved in trainer_state.json, so a run resumed mid-window logs the same mean as an
    uninterrupted one (the sums are float64, and JSON keeps them exactly).
    """

    loss_sums: list[float] = field(default_factory=list)  # one per loss component, sorted names
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0  # wall time of the window's steps, for tokens per second

    def add(self, step_losses: list[float], tokens: int, seconds: float) -> None:
        sums = self.loss_sums or [0.0] * len(step_losses)
        self.loss_sums = [a + b for a, b in zip(sums, step_losses, strict=True)]
        self.steps, self.tokens = self.steps + 1, self.tokens + tokens
        self.seconds += seconds

    def record(self, names: list[str]) -> dict:
        """The train record's loss and throughput fields; the window then starts afresh."""
        mean = [value / self.steps for value in self.loss_sums]
        record = {"loss": sum(mean)}
        record.update({f"loss_{name}": value for name, value in zip(names, mean, strict=True)})
        record["tokens_per_second"] = self.tokens / max(self.seconds, 1e-9)
        self.loss_sums, self.steps, self.tokens, self.seconds = [], 0, 0, 0.0
        return record


def append_metrics(path: str | Path, record: dict) -> None:
    """Append one event as a JSON line (opened and closed each time, so a crash loses nothing)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def truncate_metrics(path: str | Path, step: int) -> None:
    """Drop events after `step`: on resume, those steps are trained again and logged again."""
    path = Path(path)
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and not lines[-1].endswith("}"):  # a record cut short by a kill: redone
            lines.pop()
        records = [json.loads(line) for line in lines if line.strip()]
        kept = [r for r in records if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def eval_history(metrics_jsonl: str | Path, steps_per_epoch: int) -> list[dict]:
    """The eval records of a run, each with its epoch: what metrics.json keeps as "history"."""
    history = []
    for r in read_metrics(metrics_jsonl):
        if r["event"] == "eval":
            scores = {k: v for k, v in r.items() if k not in ("event", "step")}
            history.append({"epoch": r["step"] / steps_per_epoch, "step": r["step"], **scores})
    return history


def draw_losses(ax, records: list[dict], eval_label: str = "eval") -> None:
    """Train loss and eval loss against the step on a matplotlib axis."""
    for event, style, label in (("train", "-", "train"), ("eval", "o-", eval_label)):
        points = [(r["step"], r["loss"]) for r in records if r["event"] == event and "loss" in r]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, style, label=f"{label} loss", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_losses(metrics_jsonl: str | Path, png_path: str | Path) -> Path:
    """Train loss and eval loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    draw_losses(ax, read_metrics(metrics_jsonl))
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)


def plot_dev_scores(history: list[dict], metric: str, png_path: str | Path) -> Path:
    """The dev metric against the epoch, as a PNG (matplotlib imported here: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    points = [(h["epoch"], h[metric]) for h in history if not math.isnan(h.get(metric, math.nan))]
    if points:
        ax.plot(*zip(*points, strict=True), "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"dev {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
