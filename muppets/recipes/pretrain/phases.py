"""Pretraining in phases: BERT's short sequences first, then long ones from those weights.

Devlin et al. 2019, A.2: 90% of the steps at 128 tokens, then 10% at 512, because attention is
quadratic in the length and long sequences are needed mostly to learn the positions past 128.
A phase overrides a few options of the run (sequence length, batch, masking, learning rate) and
takes a `share` of its time budget and step cap, or its own `max_steps`. Each phase is a run
of its own in `<out>/phase-<k>` (k from 1) with a fresh optimizer and schedule, started from the
previous phase's final weights; the run directory keeps the merged metrics.jsonl (every record
with its "phase", "step" counted over all phases and "phase_step"), loss.png and result.json.
`phases[k]` in messages is the k-th `[[phases]]` table, counted from 1 as the directories are.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from muppets.errors import ConfigError
from muppets.training import logging as log
from muppets.training.options import option


@dataclass
class Phase:
    """One `[[phases]]` table: the options it changes (None: the run's value)."""

    share: float | None = option("share of the run's time budget and max_steps", None)
    max_steps: int | None = option("this phase's optimizer steps (instead of a share)", None)
    max_seq_length: int | None = option("tokens per instance", None)
    batch_size: int | None = option("examples per optimizer step", None)
    micro_batch_size: int | None = option("examples per forward pass", None)
    masked_lm_prob: float | None = option("share of tokens predicted", None)
    max_predictions_per_seq: int | None = option(
        "cap on predicted tokens (default: as BERT, ceil(masked_lm_prob * max_seq_length))", None
    )
    masking: str | None = option(
        "token, whole_word, span, ngram, phrase or entity (ERNIE: whole_word -> phrase -> entity)",
        None,
    )
    learning_rate: float | None = option("peak learning rate", None)
    warmup_steps: int | None = option("warmup steps", None)
    warmup_ratio: float | None = option("warmup as a share of the phase's steps", None)
    eval_every: int | None = option("steps between evaluations", None)
    save_every: int | None = option("steps between checkpoints", None)
    train_data: str | None = option("other shards (same tokenizer)", None)
    valid_data: str | None = option("other held-out shards (same tokenizer)", None)


PHASE_KEYS = tuple(f.name for f in dataclasses.fields(Phase))


def as_phase(item: Phase | dict, index: int) -> Phase:
    """A Phase from a Phase or a dict (a TOML table); an unknown key names `phases[k].key`."""
    if isinstance(item, Phase):
        return item
    if not isinstance(item, dict):
        raise ConfigError(f"phases[{index}] must be a table of options, got {item!r}")
    for key in item:
        if key not in PHASE_KEYS:
            valid = ", ".join(sorted(PHASE_KEYS))
            raise ConfigError(f"unknown config key 'phases[{index}].{key}' (valid keys: {valid})")
    return Phase(**item)


def check_lengths(phases: list[Phase], time_budget: str | None) -> None:
    """Every phase gives a share, all adding up to 1, or every phase gives its max_steps."""
    for k, phase in enumerate(phases, 1):
        if (phase.share is None) == (phase.max_steps is None):
            raise ConfigError(f"phases[{k}] must give one of share or max_steps, not both or none")
        if phase.share is not None and not 0 < phase.share <= 1:
            raise ConfigError(f"phases[{k}].share must be in (0, 1], got {phase.share!r}")
        if phase.max_steps is not None and phase.max_steps < 1:
            raise ConfigError(f"phases[{k}].max_steps must be >= 1, got {phase.max_steps!r}")
    by_share = [phase.share is not None for phase in phases]
    if any(by_share) and not all(by_share):
        k = by_share.index(not by_share[0]) + 1
        first = "share" if by_share[0] else "max_steps"
        raise ConfigError(
            f"phases[{k}] must give {first} as phases[1] does (all shares or all max_steps)"
        )
    if all(by_share):
        total = sum(phase.share for phase in phases)  # type: ignore[misc]
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            shown = " + ".join(f"{phase.share:g}" for phase in phases)
            raise ConfigError(f"phases[].share must add up to 1, got {shown} = {total:g}")
    elif time_budget is not None:
        raise ConfigError(
            "phases[1].max_steps with time_budget: give each phase a share of the budget instead"
        )


def overrides(phase: Phase, run: dict, budget_seconds: float | None) -> dict:
    """The flat options a phase changes in the run's `run` options (flat_options)."""
    given = {k: v for k, v in dataclasses.asdict(phase).items() if v is not None}
    share = given.pop("share", None)
    if share is not None:  # the share of the budget, and of the step cap with it
        given["max_steps"] = max(1, round(share * run["max_steps"]))
        if budget_seconds is not None:
            given["time_budget"] = f"{share * budget_seconds:.3f}s"
    if "warmup_steps" in given and "warmup_ratio" not in given:
        given["warmup_ratio"] = None  # the run's ratio would override the phase's steps
    moved = "max_seq_length" in given or "masked_lm_prob" in given
    if moved and "max_predictions_per_seq" not in given:
        # BERT's create_pretraining_data.py: 20 of 128 tokens at 15%, 80 of 512.
        length = given.get("max_seq_length", run["max_seq_length"])
        rate = given.get("masked_lm_prob", run["masked_lm_prob"])
        given["max_predictions_per_seq"] = math.ceil(round(rate * length, 6))
    return given


def merge_metrics(out: str | Path, count: int) -> list[dict]:
    """`<out>/metrics.jsonl` from the phases' own, each record with its phase; the step counts
    on from the previous phase's last step (the phase's own is "phase_step")."""
    out, merged, offset = Path(out), [], 0
    for k in range(1, count + 1):
        records = log.read_metrics(out / f"phase-{k}" / "metrics.jsonl")
        for record in records:
            merged.append({**record, "phase": k, "phase_step": record["step"]})
            merged[-1]["step"] = offset + record["step"]
        offset += max((r["step"] for r in records), default=0)
    text = "".join(json.dumps(record) + "\n" for record in merged)
    (out / "metrics.jsonl").write_text(text, encoding="utf-8")
    return merged


def plot_phases(records: list[dict], labels: list[str], png_path: str | Path) -> Path:
    """Train and held-out loss over all phases, a dotted line where each phase starts."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    log.draw_losses(ax, records, eval_label="held-out")
    for k, label in enumerate(labels, 1):
        steps = [r["step"] - r["phase_step"] for r in records if r["phase"] == k]
        if steps:
            ax.axvline(steps[0], color="grey", linestyle=":", linewidth=1)
            where = ("data", "axes fraction")
            ax.annotate(label, (steps[0], 1), xycoords=where, va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
