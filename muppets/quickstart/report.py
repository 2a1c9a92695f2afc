"""The quickstart's report: a comparison table per label budget, report.json, two PNG figures
(pretraining losses: BERT's beside the unigram baseline, ELECTRA's generator and discriminator,
ELMo's; the learning curves) and report.html.

report.html is self-contained (inline style, no script, nothing fetched) and shows the PNGs that
sit beside it by file name, so the folder can be copied or served as it is. Every number of the
table is in report.json too. matplotlib (Agg) is imported inside the plotting functions
(figures.py).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from muppets.quickstart.figures import plot_learning_curves, plot_pretraining

ROWS = {
    "bert-finetuned": "BERT fine-tuned",
    "bert-frozen": "BERT frozen + linear head",
    "bert-scratch": "BERT from scratch",
    "electra-finetuned": "ELECTRA fine-tuned",
    "elmo-bilstm": "ELMo frozen + biLSTM",
    "random-bilstm": "random embeddings + biLSTM",
    "bag-of-embeddings": "bag of embeddings",
    "conll-bert-finetuned": "CoNLL-2003: BERT fine-tuned",
    "conll-bert-scratch": "CoNLL-2003: BERT from scratch",
}
LOSS_PNG, CURVE_PNG = "pretraining_loss.png", "learning_curve.png"
COLUMNS = (
    "model",
    "labels",
    "median %",
    "min %",
    "max %",
    "seeds",
    "lr",
    "epochs",
    "train s",
    "trained params",
    "total params",
)


def table_cells(row: dict) -> list[str]:
    """The table's cells of one row (one model at one label budget), as text; every cell after
    the first is a number. Scores: SST-2 dev accuracy, CoNLL-2003 test entity F1; the median and
    the range over the seeds."""
    return [
        row["model"],
        f"{row['train_examples']:,}",
        f"{100 * row['median']:.1f}",
        f"{100 * row['min']:.1f}",
        f"{100 * row['max']:.1f}",
        str(row["seeds"]),
        f"{row['learning_rate']:g}",
        str(row["epochs"]),
        f"{row['train_seconds']:.1f}",
        f"{row['trained_parameters']:,}",
        f"{row['total_parameters']:,}",
    ]


def format_table(rows: list[dict], notes: list[str] = ()) -> str:
    """The table as text, then one line per note of the plan (what was dropped, and why)."""
    cells = [list(COLUMNS)] + [table_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for line in cells:
        numbers = [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        lines.append("  ".join([line[0].ljust(widths[0]), *numbers]))
    lines.insert(1, "-" * len(lines[0]))
    lines += [f"not run (the budget's estimate did not fit): {note}" for note in notes]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } .lead { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35em 0.8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
code { background: #f3f3f3; padding: 0 0.2em; } .note { color: #666; font-size: 0.9em; }
tr.note td { border-bottom: none; color: #a33; }
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
        *_phase_lines(bert),
        *_electra_lines(summary),
        f"ELMo ({summary['models']['elmo']}): {elmo['steps']:,} steps ({elmo['stopped']}), "
        f"{elmo['tokens']:,} tokens in {elmo['train_seconds']:.0f} s; held-out perplexity "
        f"{elmo['perplexity'] or float('nan'):.1f} over a {elmo['vocabulary']:,}-word vocabulary.",
    ]
    return lines


def _electra_lines(summary: dict) -> list[str]:
    """ELECTRA's run (when it ran): its generator's and discriminator's held-out scores, the whole
    run's and each phase's."""
    electra = summary["pretraining"].get("electra")
    if electra is None:
        return []

    def scores(held_out: dict) -> str:
        nan = float("nan")
        return (
            f"held-out generator MLM loss {held_out.get('mlm_loss', nan):.3f} (accuracy "
            f"{100 * held_out.get('mlm_accuracy', nan):.1f} %), discriminator accuracy "
            f"{100 * held_out.get('disc_accuracy', nan):.1f} % and AUC "
            f"{held_out.get('disc_auc', nan):.3f} on "
            f"{100 * held_out.get('replaced_share', nan):.1f} % replaced tokens"
        )

    lines = [
        f"ELECTRA ({summary['models']['electra']}, the same phases, shards and wall-clock as "
        f"BERT's): {electra['steps']:,} steps ({electra['stopped']}), {electra['tokens']:,} tokens "
        f"in {electra['train_seconds']:.0f} s; {scores(electra.get('eval') or {})}."
    ]
    for k, phase in enumerate(electra.get("phases", []), 1):
        lines.append(
            f"ELECTRA phase {k}: {phase['max_seq_length']} tokens x {phase['batch_size']} per "
            f"step, {phase['steps']:,} steps, {phase['train_seconds']:.0f} s; "
            f"{scores(phase.get('eval') or {})}."
        )
    return lines


def _phase_lines(bert: dict) -> list[str]:
    """Each phase of the BERT pretraining, its held-out MLM loss beside the unigram baseline."""
    lines = []
    for k, phase in enumerate(bert.get("phases", []), 1):
        mlm = (phase.get("eval") or {}).get("mlm_loss", float("nan"))
        baseline = phase["unigram_baseline"]
        below = "below" if mlm < baseline["loss"] else "not below"
        lines.append(
            f"BERT phase {k}: {phase['max_seq_length']} tokens x {phase['batch_size']} per step, "
            f"{phase['steps']:,} steps, {phase['train_seconds']:.0f} s; held-out MLM loss "
            f"{mlm:.3f} against {baseline['loss']:.3f} for the unigram baseline on the same "
            f"{baseline['targets']:,} masked tokens ({below} it)."
        )
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
    notes = summary["plan"]["notes"]
    foot = "".join(
        f'<tr class="note"><td colspan="{len(COLUMNS)}">not run (the budget\'s estimate did not '
        f"fit): {e(note)}</td></tr>"
        for note in notes
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>muppets quickstart report</title>
<style>{STYLE}</style></head>
<body>
<h1>muppets quickstart</h1>
<p class="lead">Data: {e(str(data))}. Budget {e(settings["budget"])}, seeds
{e(settings["seeds"])}, arithmetic {e(settings.get("precision", "fp32"))}. Each model below
is trained on SST-2 sentiment at each label budget
(nested subsets of the {summary["available_examples"]:,} training sentences: every model sees the
same ones) and scored on the dev set ({summary["dev_size"]:,} sentences; majority class
{100 * summary["majority"]:.1f} %).</p>
<h2>Pretrained against from scratch, by label budget</h2>
<p>Labels: training sentences. Median, min and max over the seeds of SST-2 dev accuracy (the
CoNLL-2003 rows: test entity F1, the model chosen on valid); lr: the learning rate chosen on dev
by the median over the seeds.</p>
<table id="results"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody><tfoot>{foot}</tfoot></table>
<img src="{CURVE_PNG}" alt="learning curves: score against the label budget, pretrained and
from scratch">
<h2>Pretraining</h2>
<ul>{pretraining}</ul>
<img src="{LOSS_PNG}" alt="pretraining loss curves of BERT, ELECTRA (generator and
discriminator) and ELMo, and the unigram baseline of BERT's held-out masked tokens">
<h2>Fill-mask with the pretrained BERT</h2>
<table id="fill-mask"><thead><tr><th>text</th><th>top 5 (probability)</th></tr></thead><tbody>
{chr(10).join(fills)}
</tbody></table>
<p class="note">Train s: seconds in the training loops of every seed and every learning
rate tried at that budget, dev evaluations included. Trained params:
what the optimizer updates; total: what a prediction runs through (a frozen ELMo's softmax
excluded). All numbers are in report.json. Text: English Wikipedia (CC BY-SA 3.0); SST-2: Socher
et al. 2013, via GLUE (Wang et al. 2019).</p>
</body></html>
"""


def write_report(out: Path, summary: dict) -> list[Path]:
    """report.json, the two PNGs and report.html into `out`; returns their paths."""
    models = summary["models"]
    files = [
        plot_pretraining(out, models, summary["pretraining"]["bert"], out / LOSS_PNG),
        plot_learning_curves(summary["rows"], summary["majority"], out / CURVE_PNG),
    ]
    summary = {**summary, "files": {"html": "report.html", "figures": [f.name for f in files]}}
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_html(summary), encoding="utf-8")
    table = format_table(summary["rows"], summary["plan"]["notes"])
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    return [*files, out / "report.json", out / "report.html", out / "table.txt"]
