"""The report's two figures: the pretraining losses (BERT's beside the unigram baseline, ELECTRA's
generator and discriminator, ELMo's), and the learning curves (score against the label budget)
of pretrained against from-scratch models.
matplotlib (Agg) is imported inside each function: it is slow to import."""

from __future__ import annotations

import math
from pathlib import Path

from muppets.training.logging import draw_losses, read_metrics

# The pairs the learning curves set side by side: (panel title, [(row, label, colour)]).
PANELS = (
    (
        "SST-2: BERT and ELECTRA",
        [
            ("bert-finetuned", "BERT pretrained, fine-tuned", "#4c72b0"),
            ("electra-finetuned", "ELECTRA pretrained, fine-tuned", "#55a868"),
            ("bert-scratch", "BERT from scratch", "#c44e52"),
            ("bert-frozen", "BERT pretrained, frozen + linear", "#8172b2"),
        ],
    ),
    (
        "SST-2: biLSTM",
        [
            ("elmo-bilstm", "ELMo + word vectors", "#4c72b0"),
            ("random-bilstm", "random word vectors", "#c44e52"),
            ("bag-of-embeddings", "bag of embeddings", "#8172b2"),
        ],
    ),
    (
        "CoNLL-2003 NER: BERT",
        [
            ("conll-bert-finetuned", "pretrained, fine-tuned", "#4c72b0"),
            ("conll-bert-scratch", "from scratch", "#c44e52"),
        ],
    ),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def draw_bert_losses(ax, records: list[dict], bert: dict) -> None:
    """Train loss, held-out MLM loss, and each phase's unigram baseline as a dashed line over
    the phase's steps (the baseline on the same held-out masked tokens: the level a model that
    learnt only token frequencies would reach)."""
    train = [(r["step"], r["loss"]) for r in records if r["event"] == "train" and "loss" in r]
    held_out = [
        (r["step"], r["mlm_loss"]) for r in records if r["event"] == "eval" and "mlm_loss" in r
    ]
    if train:
        ax.plot(*zip(*train, strict=True), "-", label="train loss (MLM + NSP)", linewidth=1)
    if held_out:
        ax.plot(*zip(*held_out, strict=True), "o-", label="held-out MLM loss", markersize=3)
    for k, phase in enumerate(bert.get("phases", []), 1):
        own = [r for r in records if r.get("phase") == k]
        if not own:
            continue
        first = own[0]["step"] - own[0]["phase_step"]  # the step before the phase's first
        end = max(first + 1, max(r["step"] for r in own))
        loss = phase["unigram_baseline"]["loss"]
        label = "unigram baseline (held-out)" if k == 1 else None
        ax.hlines(loss, first, end, colors="#555", linestyles="--", label=label)
        if k > 1:
            ax.axvline(first, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{phase['max_seq_length']} tokens", (first, loss), fontsize=8, va="bottom")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def draw_electra(ax, records: list[dict]) -> None:
    """The generator's MLM loss (train and held-out) on the left axis; on the right, what says
    whether the discriminator learns: its held-out ROC AUC (0.5: chance) and accuracy, beside
    the share of tokens the generator replaced (the accuracy of always answering 'original' is
    one minus it)."""
    train = [
        (r["step"], r["loss_mlm"]) for r in records if r["event"] == "train" and "loss_mlm" in r
    ]
    evals = [r for r in records if r["event"] == "eval" and "mlm_loss" in r]
    if train:
        ax.plot(*zip(*train, strict=True), "-", label="generator MLM loss (train)", linewidth=1)
    steps = [r["step"] for r in evals]
    if evals:
        ax.plot(steps, [r["mlm_loss"] for r in evals], "o-", label="held-out MLM", markersize=3)
    phases = sorted({r["phase"] for r in records if "phase" in r})
    for k in phases[1:]:  # where the 128-token phase starts
        first = next(r for r in records if r.get("phase") == k)
        ax.axvline(first["step"] - first["phase_step"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("generator loss (nats)")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    for key, label, colour in (
        ("disc_auc", "discriminator AUC", "#55a868"),
        ("disc_accuracy", "discriminator accuracy", "#8172b2"),
        ("replaced_share", "replaced share", "#999"),
    ):
        points = [(r["step"], r[key]) for r in evals if key in r and not math.isnan(r[key])]
        if points:
            right.plot(*zip(*points, strict=True), "s--", color=colour, label=label, markersize=3)
    right.set_ylim(0, 1)
    right.set_ylabel("held-out share")
    handles = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
    labels = [t for a in (ax, right) for t in a.get_legend_handles_labels()[1]]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="center right")


def plot_pretraining(out: Path, models: dict, bert: dict, png: Path) -> Path:
    """A panel for each pretraining: BERT (with the unigram baseline), ELECTRA (generator MLM
    and discriminator; when it ran) and ELMo, each with train and held-out loss."""
    plt = _pyplot()
    electra = "electra" in models
    fig, axes = plt.subplots(1, 3 if electra else 2, figsize=(16 if electra else 11, 3.8), dpi=100)
    draw_bert_losses(axes[0], read_metrics(out / "bert" / "metrics.jsonl"), bert)
    axes[0].set_title(f"BERT ({models['bert']}, MLM + NSP)")
    if electra:
        draw_electra(axes[1], read_metrics(out / "electra" / "metrics.jsonl"))
        axes[1].set_title(f"ELECTRA ({models['electra']}, generator + discriminator)")
    draw_losses(axes[-1], read_metrics(out / "elmo" / "metrics.jsonl"), eval_label="held-out")
    axes[-1].set_title(f"ELMo ({models['elmo']}, biLM)")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def plot_learning_curves(rows: list[dict], majority: float | None, png: Path) -> Path:
    """One panel per pair of PANELS that has rows: the median over seeds against the label budget
    (log x), the min-max band shaded; a model run at one budget is a single point."""
    plt = _pyplot()
    names = {r["name"] for r in rows}
    panels = [(t, [c for c in curves if c[0] in names]) for t, curves in PANELS]
    panels = [(t, curves) for t, curves in panels if curves]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), dpi=100, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels, strict=True):
        for name, label, colour in curves:
            points = sorted(
                (r for r in rows if r["name"] == name), key=lambda r: r["train_examples"]
            )
            x = [r["train_examples"] for r in points]
            median = [100 * r["median"] for r in points]
            seeds = "/".join(sorted({str(r["seeds"]) for r in points}))
            ax.plot(x, median, "o-", color=colour, label=f"{label} (median of {seeds})")
            low, high = [100 * r["min"] for r in points], [100 * r["max"] for r in points]
            ax.fill_between(x, low, high, color=colour, alpha=0.2)
        if majority is not None and title.startswith("SST-2"):
            line = {"color": "#999", "linestyle": "--", "linewidth": 1}
            ax.axhline(100 * majority, **line, label="majority class")
        ax.set_xscale("log")
        shown = {name for name, _, _ in curves}
        budgets = sorted({r["train_examples"] for r in rows if r["name"] in shown})
        ax.set_xticks(budgets, [f"{b:,}" for b in budgets])  # the budgets, not powers of 10
        ax.minorticks_off()
        ax.set_xlabel("label budget (training sentences)")
        ax.set_ylabel("test entity F1 (%)" if title.startswith("CoNLL") else "dev accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png
