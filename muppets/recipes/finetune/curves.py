"""Learning curves over the labelled-set size (`--train-sizes 100,300,1000,all`): where
pretraining shows first, since a pretrained encoder needs fewer labels than one from scratch.

The subsets are nested prefixes of one seeded permutation of the training examples
(`--train-size-seed`, independent of the fine-tuning seeds): every seed at size n sees the same n
examples, and the 300 contain the 100. QA draws questions (examples), never windows; tagging draws
sentences. The draw is not stratified: a size smaller than a class's share may hold no example
of it, which is reported (classes_seen), and the same seed always draws the same subset. Dev and
test sets stay whole. One summary per size, then summary.json's "curve", the table and
learning_curve.png.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from muppets.errors import ConfigError

ALL = "all"


def parse_train_sizes(text: str | None) -> list[int | None]:
    """ "100,300,all" -> [100, 300, None] (None: the whole training set), ascending, all last."""
    if text is None:
        return []
    sizes: list[int | None] = []
    for item in (t.strip() for t in str(text).split(",")):
        if item == ALL:
            sizes.append(None)
            continue
        if not item.isdigit() or int(item) <= 0:
            message = f"train_sizes must be comma-separated integers > 0 or {ALL}, got {item!r}"
            raise ConfigError(message)
        sizes.append(int(item))
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"train_sizes must be distinct, got {text!r}")
    return sorted(s for s in sizes if s is not None) + [None] * (None in sizes)


def check_sizes(sizes: list[int | None], total: int, where: Path) -> None:
    """A size larger than the training set is an error (before any training)."""
    for size in sizes:
        if size is not None and size > total:
            message = f"train_sizes: {size} is larger than the training set ({total} examples"
            raise ConfigError(f"{message} in {where}); use {ALL} for the whole set")


def subset_indices(total: int, size: int | None, seed: int) -> list[int]:
    """The first `size` of one seeded permutation of range(total), ascending: nested across
    sizes, the same for every fine-tuning seed."""
    order = np.random.default_rng(seed).permutation(total)
    return sorted(int(i) for i in order[: total if size is None else size])


def subset(data, indices: list[int]):
    """A prepared task (encoder.Prepared or features.DownstreamData) with only these training
    examples, and their features (QA: every window of a kept question) renumbered to match."""
    new = {old: n for n, old in enumerate(indices)}
    features = [
        dataclasses.replace(f, example=new[f.example])
        for f in data.train_features
        if f.example in new
    ]
    examples = [data.train_examples[i] for i in indices]
    return data._replace(train_examples=examples, train_features=features)


def classes_seen(examples: list) -> int | None:
    """Distinct class labels among classification examples (None for other tasks)."""
    labels = [getattr(e, "label", None) for e in examples]
    if not labels or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return None
    return len(set(labels))


def size_name(size: int | None) -> str:
    return f"size-{ALL if size is None else size}"


# ---------------------------------------------------------------- the table and the plot


def format_curve(rows: list[dict], metric: str, percent: bool) -> str:
    """One line per size: the median and the range over seeds, in the task's units."""
    scale = 1 if percent else 100
    lines = [f"{'train size':>10}  {'median ' + metric:>16}  {'min':>7}  {'max':>7}  seeds"]
    for row in rows:
        lines.append(
            f"{row['train_examples']:>10,}  {scale * row['median']:>16.2f}  "
            f"{scale * row['min']:>7.2f}  {scale * row['max']:>7.2f}  {len(row['scores'])}"
        )
    return "\n".join(lines)


def plot_curve(rows: list[dict], metric: str, title: str, path: Path) -> None:
    """Score against the training-set size (log x): the median, the min-max band shaded, and
    every seed's score as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["train_examples"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(sizes, [r["min"] for r in rows], [r["max"] for r in rows], alpha=0.25)
    ax.plot(sizes, [r["median"] for r in rows], marker="o", label="median over seeds")
    for size, row in zip(sizes, rows, strict=True):
        scores = list(row["scores"].values())
        ax.scatter([size] * len(scores), scores, s=10, color="black", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
