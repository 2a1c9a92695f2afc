"""`muppets quickstart`: the whole story in one command, stage by stage, under one budget.

On the bundled sample (muppets/samples: 2 MB of Wikipedia, 6,000 SST-2 sentences) by default, or
with `--data-dir DIR` on DIR/wikipedia-en-extract/wiki.train.0*.txt, DIR/glue/SST-2 and
DIR/conll2003:
  1. a WordPiece tokenizer trained on the text, and the text tokenized into shards;
  2. a small BERT pretrained (MLM + NSP) in phases (config.BERT_PHASES: short instances first),
     an ELECTRA of the same discriminator size in the same phases for the same wall-clock, side
     by side (--no-electra: without it), and a small ELMo biLM, each under a time budget; the
     unigram baseline of BERT's held-out masked tokens (tasks/baselines.py) beside its loss;
  3. SST-2 learning curves over the label budgets (`--label-budgets`, nested subsets): the BERT
     fine-tuned, the ELECTRA discriminator fine-tuned alike and the BERT architecture from scratch
     (every seed at every budget, the learning rate chosen on dev), the ELMo frozen under a biLSTM
     and random embeddings under the same biLSTM (every seed at the smallest budget), the BERT
     frozen under a linear head and a bag of embeddings (one seed, the largest budget); with
     --data-dir, CoNLL-2003 NER pretrained vs scratch (test entity F1);
  4. a fill-mask example, the comparison table, report.html, report.json and the PNG figures.
Each stage runs in `<out>/<stage>/` and leaves a done.json (stages.py): Ctrl-C and the same
command again resume from the finished stages (an interrupted pretraining inside its phase).
`<out>/settings.json` pins the settings and the recipe constants that decide the results;
another `--budget` or `--data-dir` needs another `--out`.

The budget (`--budget`, 15m on the sample, 1h with --data-dir) is split over the stages by the
fixed shares of config.py. After the tokenizer and the shards, two lanes run side by side, one
process and one core each (lanes.py): BERT pretraining, its rows, ELMo and the word-level rows
here, and the stages that need no BERT pretraining (ELECTRA's pretraining and row, the scratch
BERT) in a second process; then the report. Pretraining gets its share as the loop's time
budget (less what the stage spends around the loop: the vocabulary pass, held-out
evaluation, saving). Fine-tuning has no time cap, so the comparison's runs are planned before they
start (plan.py): estimated in units of the BERT training speed measured in the shards stage
(calibrate.py), and dropped in a stated order, with a note under the table, when they do not all
fit.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from muppets.errors import ConfigError
from muppets.quickstart import comparison, report
from muppets.quickstart.config import (
    AFTER_LANES,
    BEFORE_LANES,
    BERT_PHASES,
    BERT_PRETRAINING,
    CONLL_LABEL_BUDGETS,
    ELECTRA_PRETRAINING,
    Inputs,
    QuickstartConfig,
    find_inputs,
    lane_shares,
    stage_shares,
)
from muppets.quickstart.lanes import finish_lane, start_lane, stop_lane
from muppets.quickstart.pretraining import (
    fill_mask_examples,
    prepare_shards,
    pretrain_bert,
    pretrain_bilm,
    pretrain_electra,
    train_tokenizer,
)
from muppets.quickstart.stages import Stage, StageContext, StageRunner, format_seconds
from muppets.training.device import pick_device
from muppets.training.precision import describe, resolve_precision

__all__ = ["QuickstartConfig", "run_quickstart"]  # QuickstartConfig: defined in config.py


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run (or resume) every stage; print the table; returns report.json's contents."""
    out, inputs = Path(config.out), find_inputs(config)
    check_budgets(config, inputs)
    config = resolve_arithmetic(config)
    pin_settings(config, out)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        runner = run_lanes(config, inputs, out)
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "report.json").read_text(encoding="utf-8"))
    summary["stage_seconds"] = {name: r["seconds"] for name, r in runner.records.items()}
    took = format_seconds(runner.clock() - runner.start)
    print(f"all {len(runner.order)} stages done; this run took {took}")
    print("\n" + report.format_table(summary["rows"], summary["plan"]["notes"]))
    print(f"\nreport: {out / 'report.html'} (figures and report.json beside it)")
    return summary


def stage_groups(config: QuickstartConfig) -> tuple[list[str], list[list[str]], list[str]]:
    """(before the lanes, the lanes, after them): stage names, as config.py lists them."""
    lanes = [list(lane) for lane in lane_shares(bool(config.data_dir), config.electra)]
    return list(BEFORE_LANES), lanes, list(AFTER_LANES)


def run_lanes(config: QuickstartConfig, inputs: Inputs, out: Path) -> StageRunner:
    """The stages before the lanes, then the first lane here and the second in another process
    (--lanes 2) or both here one after the other (--lanes 1), then the report."""
    stages = {stage.name: stage for stage in build_stages(config, inputs)}
    before, lanes, after = stage_groups(config)
    runner = StageRunner(out, config.budget_seconds, list(stages))

    def run(names: list[str], later: list[str]) -> None:
        runner.run([stages[n] for n in names], sum(stages[n].share for n in later))

    run(before, lanes[0] + after)
    if config.lanes == 1 or runner.up_to_date([stages[n] for n in lanes[1]]):
        run(lanes[0] + lanes[1], after)  # one lane, or nothing left to do in the second
    else:
        log = out / "lane-2.log"
        offset = log.stat().st_size if log.is_file() else 0
        args = (config, inputs, lanes[1], sorted(runner.ran), runner.start)
        process = start_lane(second_lane, args, log)
        print(f"lane 2 ({', '.join(lanes[1])}) runs beside, in a second process: {log}")
        try:
            run(lanes[0], after)
        except BaseException as error:
            stop_lane(process, isinstance(error, KeyboardInterrupt))
            raise
        if process.is_alive():
            print(f"waiting for lane 2 (tail -f {log})", flush=True)
        finish_lane(process, log, offset)
        runner.load(lanes[1])
    run(after, [])
    return runner


def second_lane(config, inputs, names: list[str], ran: list[str], start: float) -> None:
    """The second lane, in its own process (lanes.start_lane): the stages it needs from before
    the lanes are read from their done.json."""
    if config.threads:
        torch.set_num_threads(config.threads)
    stages = {stage.name: stage for stage in build_stages(config, inputs)}
    runner = StageRunner(Path(config.out), config.budget_seconds, list(stages))
    runner.start, runner.ran = start, set(ran)
    before, _, after = stage_groups(config)
    runner.load(before)
    runner.run([stages[n] for n in names], sum(stages[n].share for n in after))


def check_budgets(config: QuickstartConfig, inputs: Inputs) -> None:
    """A label budget larger than SST-2's training set: one line before any stage runs."""
    available = len(comparison.read_sst2(inputs.sst2 / "train.tsv")[1])
    for budget in config.budget_list():
        if budget is not None and budget > available:
            raise ConfigError(
                f"label_budgets: {budget} is larger than the SST-2 training set ({available:,} "
                f"sentences in {inputs.sst2 / 'train.tsv'}); use all for the whole set"
            )


def resolve_arithmetic(config: QuickstartConfig) -> QuickstartConfig:
    """The config with --precision decided once, here, for every stage and both lanes (a
    precision that cannot pay on this machine is one line before any stage); its line printed
    once. settings.json pins the decided value: resuming on a machine that decides otherwise is
    refused, as the numbers would not be the same run's."""
    device = pick_device(config.device)
    chosen = resolve_precision(config.precision, device, config.force_precision)
    print(describe(chosen, device), flush=True)
    return dataclasses.replace(config, precision=chosen)


def recipe_constants(config: QuickstartConfig) -> dict:
    """The constants of config.py that decide the results, pinned with the settings."""
    return {
        "shares": stage_shares(bool(config.data_dir), config.lanes, config.electra),
        "bert_phases": [dict(phase) for phase in BERT_PHASES],  # ELECTRA's too
        "bert_pretraining": BERT_PRETRAINING,
        "electra_pretraining": ELECTRA_PRETRAINING if config.electra else None,
        "conll_label_budgets": CONLL_LABEL_BUDGETS if config.data_dir else None,
    }


def pin_settings(config: QuickstartConfig, out: Path) -> None:
    """settings.json: what decides the results. A resumed run must have the same."""
    unpinned = ("out", "threads", "device")  # where and how fast, not what
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in unpinned}
    settings["recipe"] = recipe_constants(config)
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: [before.get(k), v] for k, v in settings.items() if before.get(k) != v}
        if changed:
            shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(
                f"{out} holds a quickstart with other settings ({shown}): rerun with the same "
                "ones to resume, or give a new --out"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def build_stages(config: QuickstartConfig, inputs: Inputs) -> list[Stage]:
    shares = stage_shares(bool(config.data_dir), config.lanes, config.electra)
    rows = comparison.row_needs(config)

    def stage(name, title, run, needs=()):
        return Stage(name, title, shares[name], run, needs)

    def row_stage(row: str, needs: tuple[str, ...]) -> Stage:
        def run(ctx: StageContext) -> dict:
            return comparison.run_row(row, config, inputs, ctx)

        name = report.ROWS[row]  # the CoNLL-2003 rows' names say their task already
        return stage(row, name if row.startswith("conll") else f"SST-2: {name}", run, needs)

    tokenizer_title = f"train a {config.vocab_size:,}-token WordPiece tokenizer"
    lengths = " then ".join(str(p["max_seq_length"]) for p in BERT_PHASES)
    bert_title = f"pretrain BERT ({config.bert_model}, MLM + NSP, {lengths} tokens)"
    electra_title = (
        f"pretrain ELECTRA ({config.electra_model}, generator MLM + 50 x replaced-token "
        f"detection, {lengths} tokens)"
    )
    elmo_title = f"pretrain ELMo ({config.elmo_model}, biLM)"
    electra = ("electra",) if config.electra else ()
    report_needs = ("shards", "bert", *electra, "elmo", "fill-mask", *rows)
    stages = [
        stage("tokenizer", tokenizer_title, lambda ctx: train_tokenizer(config, inputs, ctx)),
        stage(
            "shards",
            "tokenize the text into shards, measure BERT's training speed",
            lambda ctx: prepare_shards(config, inputs, ctx),
            ("tokenizer",),
        ),
        stage("bert", bert_title, lambda ctx: pretrain_bert(config, ctx), ("shards",)),
        stage("elmo", elmo_title, lambda ctx: pretrain_bilm(config, inputs, ctx)),
        *(
            [
                stage(
                    "electra", electra_title, lambda ctx: pretrain_electra(config, ctx), ("shards",)
                )
            ]
            if config.electra
            else []
        ),
        stage("fill-mask", "fill-mask with the pretrained BERT", fill_mask_examples, ("bert",)),
        *(row_stage(row, needs) for row, needs in rows.items()),
        stage(
            "report",
            "write the report",
            lambda ctx: write_report(config, inputs, ctx),
            report_needs,
        ),
    ]
    return sorted(stages, key=lambda s: list(shares).index(s.name))  # the order they start


# ---------------------------------------------------------------- fine-tuning and report


def write_report(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    done, rows = ctx.done, comparison.row_needs(config)
    electra = ("electra",) if config.electra else ()
    table = [
        {"name": row, "model": report.ROWS[row], **point}
        for row in rows
        for point in done[row]["points"]
    ]
    notes = done[next(iter(rows))]["plan_notes"]  # every row computed the same plan
    summary = {
        "settings": json.loads((ctx.out / "settings.json").read_text()),
        "rows": table,
        "plan": {"notes": notes, "estimated_seconds": done[next(iter(rows))]["plan_seconds"]},
        "majority": comparison.majority_share(inputs.sst2 / "dev.tsv"),
        "dev_size": len(comparison.read_sst2(inputs.sst2 / "dev.tsv")[1]),
        "available_examples": len(comparison.read_sst2(inputs.sst2 / "train.tsv")[1]),
        "pretraining": {name: done[name] for name in ("bert", *electra, "elmo")},
        "data": {"shards": done["shards"]["manifests"]},
        "fill_mask": done["fill-mask"]["examples"],
        "models": {"bert": config.bert_model, "elmo": config.elmo_model}
        | ({"electra": config.electra_model} if config.electra else {}),
    }
    files = report.write_report(ctx.out, summary)
    return {"files": [str(f) for f in files]}
