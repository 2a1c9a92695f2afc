"""The quickstart's report: a comparison table, report.json, two PNG figures and report.html.

report.html is self-contained (inline style, no script, nothing fetched) and shows the PNGs that
sit beside it by file name, so the folder can be copied or served as it is. Every number of the
table is in report.json too. matplotlib (Agg) is imported inside the plotting functions.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from muppets.training.logging import draw_losses, read_metrics

ROWS = {
    "bert-finetuned": "BERT fine-tuned",
    "bert-frozen": "BERT frozen + linear head",
    "bert-scratch": "BERT from scratch",
    "elmo-bilstm": "ELMo frozen + biLSTM",
    "random-bilstm": "random embeddings + biLSTM",
    "bag-of-embeddings": "bag of embeddings",
}
LOSS_PNG, ACCURACY_PNG = "pretraining_loss.png", "accuracy.png"
COLUMNS = (
    "model",
    "dev accuracy %",
    "train s",
    "epochs",
    "train sentences",
    "trained params",
    "total params",
)


def table_cells(row: dict) -> list[str]:
    """The table's cells of one row, as text; every cell after the first is a number."""
    return [
        row["model"],
        f"{100 * row['accuracy']:.1f}",
        f"{row['train_seconds']:.1f}",
        str(row["epochs"]),
        f"{row['train_examples']:,}",
        f"{row['trained_parameters']:,}",
        f"{row['total_parameters']:,}",
    ]


def format_table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [table_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for line in cells:
        numbers = [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        lines.append("  ".join([line[0].ljust(widths[0]), *numbers]))
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def plot_pretraining(runs: dict[str, Path], png: Path) -> Path:
    """One panel per pretraining run (title -> run directory): train and held-out loss."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), dpi=100, squeeze=False)
    for ax, (title, run) in zip(axes[0], runs.items(), strict=True):
        draw_losses(ax, read_metrics(run / "metrics.jsonl"), eval_label="held-out")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def plot_accuracy(rows: list[dict], majority: float | None, png: Path) -> Path:
    """Horizontal bars of dev accuracy, best model on top, the majority class as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2), dpi=100)
    names = [row["model"] for row in rows][::-1]
    values = [100 * row["accuracy"] for row in rows][::-1]
    bars = ax.barh(names, values, color="#4c72b0")
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_width() + 0.5,
            bar.get_y() + bar.get_height() / 2,
            f"{value:.1f}",
            va="center",
            fontsize=9,
        )
    if majority is not None:
        ax.axvline(
            100 * majority,
            color="#c44e52",
            linestyle="--",
            linewidth=1,
            label=f"majority class {100 * majority:.1f}",
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("SST-2 dev accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } .lead { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35em 0.8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
code { background: #f3f3f3; padding: 0 0.2em; } .note { color: #666; font-size: 0.9em; }
"""


def _pretraining_lines(summary: dict) -> list[str]:
    bert, elmo = summary["pretraining"]["bert"], summary["pretraining"]["elmo"]
    held_out = bert.get("eval") or {}
    lines = [
        f"BERT ({summary['models']['bert']}): {bert['steps']:,} steps ({bert['stopped']}), "
        f"{bert['tokens']:,} tokens in {bert['train_seconds']:.0f} s; held-out MLM loss "
        f"{held_out.get('mlm_loss', float('nan')):.3f}, MLM accuracy "
        f"{100 * held_out.get('mlm_accuracy', float('nan')):.1f} %, NSP accuracy "
        f"{100 * held_out.get('nsp_accuracy', float('nan')):.1f} %.",
        f"ELMo ({summary['models']['elmo']}): {elmo['steps']:,} steps ({elmo['stopped']}), "
        f"{elmo['tokens']:,} tokens in {elmo['train_seconds']:.0f} s; held-out perplexity "
        f"{elmo['perplexity'] or float('nan'):.1f} over a {elmo['vocabulary']:,}-word vocabulary.",
    ]
    return lines


def render_html(summary: dict) -> str:
    e = html.escape
    settings = summary["settings"]
    data = settings.get("data_dir") or "the bundled sample (muppets/samples)"
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = []
    for row in summary["rows"]:
        cells = table_cells(row)
        tds = [f"<td>{e(cells[0])}</td>"] + [f'<td class="num">{e(c)}</td>' for c in cells[1:]]
        body.append(f'<tr data-row="{e(row["name"])}">' + "".join(tds) + "</tr>")
    fills = []
    for example in summary["fill_mask"]:
        shown = ", ".join(f"<code>{e(t)}</code> {p:.3f}" for t, p in example["predictions"])
        fills.append(f"<tr><td><code>{e(example['text'])}</code></td><td>{shown}</td></tr>")
    pretraining = "".join(f"<li>{e(line)}</li>" for line in _pretraining_lines(summary))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>muppets quickstart report</title>
<style>{STYLE}</style></head>
<body>
<h1>muppets quickstart</h1>
<p class="lead">Data: {e(str(data))}. Budget {e(settings["budget"])}, seed {settings["seed"]}.
Each model below is trained on SST-2 sentiment and scored on its dev set ({summary["dev_size"]:,}
sentences).</p>
<h2>SST-2 dev accuracy</h2>
<table id="results"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<img src="{ACCURACY_PNG}" alt="bar chart of SST-2 dev accuracy per model">
<h2>Pretraining</h2>
<ul>{pretraining}</ul>
<img src="{LOSS_PNG}" alt="pretraining loss curves of BERT and ELMo">
<h2>Fill-mask with the pretrained BERT</h2>
<table id="fill-mask"><thead><tr><th>text</th><th>top 5 (probability)</th></tr></thead><tbody>
{chr(10).join(fills)}
</tbody></table>
<p class="note">Train s: seconds in the training loop, dev evaluations included. Trained params:
what the optimizer updates; total: what a prediction runs through (a frozen ELMo's softmax
excluded). All numbers are in report.json. Text: English Wikipedia (CC BY-SA 3.0); SST-2: Socher
et al. 2013, via GLUE (Wang et al. 2019).</p>
</body></html>
"""


def write_report(out: Path, summary: dict) -> list[Path]:
    """report.json, the two PNGs and report.html into `out`; returns their paths."""
    runs = {
        f"BERT ({summary['models']['bert']}, MLM + NSP)": out / "bert",
        f"ELMo ({summary['models']['elmo']}, biLM)": out / "elmo",
    }
    files = [
        plot_pretraining(runs, out / LOSS_PNG),
        plot_accuracy(summary["rows"], summary.get("majority"), out / ACCURACY_PNG),
    ]
    summary = {**summary, "files": {"html": "report.html", "figures": [f.name for f in files]}}
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_html(summary), encoding="utf-8")
    (out / "table.txt").write_text(format_table(summary["rows"]) + "\n", encoding="utf-8")
    return [*files, out / "report.json", out / "report.html", out / "table.txt"]
