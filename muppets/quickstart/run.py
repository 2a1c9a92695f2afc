"""`muppets quickstart`: the whole story in one command, stage by stage, under one budget.

On the bundled sample (muppets/samples: 2 MB of Wikipedia, 6,000 SST-2 sentences) by default, or
with `--data-dir DIR` on DIR/wikipedia-en-extract/wiki.train.0*.txt, DIR/glue/SST-2 and
DIR/conll2003:
  1. a WordPiece tokenizer trained on the text, and the text tokenized into shards;
  2. a small BERT pretrained (MLM + NSP) in phases (config.BERT_PHASES: short instances first)
     and a small ELMo biLM, each under a time budget; the unigram baseline of BERT's held-out
     masked tokens (tasks/baselines.py) beside its loss;
  3. SST-2 learning curves over the label budgets (`--label-budgets`, nested subsets): the BERT
     fine-tuned and the same architecture from scratch (every seed at every budget, the learning
     rate chosen on dev), the ELMo frozen under a biLSTM and random embeddings under the same
     biLSTM (every seed at the smallest budget), the BERT frozen under a linear head and a bag of
     embeddings (one seed, the largest budget); with --data-dir, CoNLL-2003 NER pretrained vs
     scratch (test entity F1);
  4. a fill-mask example, the comparison table, report.html, report.json and the PNG figures.
Each stage runs in `<out>/<stage>/` and leaves a done.json (stages.py): Ctrl-C and the same
command again resume from the finished stages (an interrupted pretraining inside its phase).
`<out>/settings.json` pins the settings and the recipe constants that decide the results;
another `--budget` or `--data-dir` needs another `--out`.

The budget (`--budget`, 12m on the sample, 1h with --data-dir) is split over the stages by the
fixed shares of config.py. Pretraining gets its share as the loop's time budget (less what the
stage spends around the loop: the vocabulary pass, held-out evaluation, saving). Fine-tuning has
no time cap, so the comparison's runs are planned before they start (plan.py): estimated from
the BERT pretraining throughput just measured, and dropped in a stated order, with a note in the
table, when they do not all fit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from muppets.data.prepare import PrepareConfig, TokenizerTrainConfig, prepare_corpus
from muppets.data.prepare import train_tokenizer as train_wordpiece
from muppets.data.shards import ShardedCorpus
from muppets.errors import ConfigError
from muppets.models.elmo import PRESETS as ELMO_PRESETS
from muppets.quickstart import comparison, report
from muppets.quickstart.config import (
    BERT_PHASES,
    BERT_PRETRAINING,
    CONLL_LABEL_BUDGETS,
    Inputs,
    QuickstartConfig,
    find_inputs,
    stage_shares,
)
from muppets.quickstart.stages import Stage, StageContext, run_stages
from muppets.recipes.fill_mask import fill_mask
from muppets.recipes.pretrain import Phase, PretrainConfig, held_out_batches, pretrain
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig, pretrain_elmo
from muppets.tasks.baselines import unigram_baseline, unigram_counts
from muppets.tokenization.wordpiece import load_tokenizer
from muppets.training.checkpoint import checkpoints
from muppets.training.options import from_options
from muppets.training.pretrained import load_pretrained

__all__ = ["QuickstartConfig", "run_quickstart"]  # QuickstartConfig: defined in config.py

LOOP_SHARE = 0.85  # of a pretraining stage's seconds, for the training loop itself
FILL_MASK_TEXTS = (
    "he was born in [MASK] .",
    "the film was released in [MASK] .",
    "she is an american [MASK] and writer .",
)


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run (or resume) every stage; print the table; returns report.json's contents."""
    out, inputs = Path(config.out), find_inputs(config)
    check_budgets(config, inputs)
    pin_settings(config, out)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        records = run_stages(build_stages(config, inputs), out, config.budget_seconds)
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "report.json").read_text(encoding="utf-8"))
    summary["stage_seconds"] = {name: r["seconds"] for name, r in records.items()}
    print("\n" + report.format_table(summary["rows"]))
    print(f"\nreport: {out / 'report.html'} (figures and report.json beside it)")
    return summary


def check_budgets(config: QuickstartConfig, inputs: Inputs) -> None:
    """A label budget larger than SST-2's training set: one line before any stage runs."""
    available = len(comparison.read_sst2(inputs.sst2 / "train.tsv")[1])
    for budget in config.budget_list():
        if budget is not None and budget > available:
            raise ConfigError(
                f"label_budgets: {budget} is larger than the SST-2 training set ({available:,} "
                f"sentences in {inputs.sst2 / 'train.tsv'}); use all for the whole set"
            )


def recipe_constants(config: QuickstartConfig) -> dict:
    """The constants of config.py that decide the results, pinned with the settings."""
    return {
        "shares": stage_shares(bool(config.data_dir)),
        "bert_phases": [dict(phase) for phase in BERT_PHASES],
        "bert_pretraining": BERT_PRETRAINING,
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
    shares, rows = stage_shares(bool(config.data_dir)), comparison.row_needs(config)

    def stage(name, title, run, needs=()):
        return Stage(name, title, shares[name], run, needs)

    def row_stage(row: str, needs: tuple[str, ...]) -> Stage:
        def run(ctx: StageContext) -> dict:
            return comparison.run_row(row, config, inputs, ctx)

        task = "CoNLL-2003" if row.startswith("conll") else "SST-2"
        return stage(row, f"{task}: {report.ROWS[row]}", run, needs)

    tokenizer_title = f"train a {config.vocab_size:,}-token WordPiece tokenizer"
    lengths = " then ".join(str(p["max_seq_length"]) for p in BERT_PHASES)
    bert_title = f"pretrain BERT ({config.bert_model}, MLM + NSP, {lengths} tokens)"
    elmo_title = f"pretrain ELMo ({config.elmo_model}, biLM)"
    report_needs = ("shards", "bert", "elmo", "fill-mask", *rows)
    return [
        stage("tokenizer", tokenizer_title, lambda ctx: train_tokenizer(config, inputs, ctx)),
        stage(
            "shards",
            "tokenize the text into shards",
            lambda ctx: prepare_shards(inputs, ctx),
            ("tokenizer",),
        ),
        stage("bert", bert_title, lambda ctx: pretrain_bert(config, ctx), ("shards",)),
        stage("elmo", elmo_title, lambda ctx: pretrain_bilm(config, inputs, ctx)),
        stage("fill-mask", "fill-mask with the pretrained BERT", fill_mask_examples, ("bert",)),
        *(row_stage(row, needs) for row, needs in rows.items()),
        stage(
            "report",
            "write the report",
            lambda ctx: write_report(config, inputs, ctx),
            report_needs,
        ),
    ]


# ---------------------------------------------------------------- data and pretraining


def train_tokenizer(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    shutil.rmtree(ctx.directory, ignore_errors=True)
    options = TokenizerTrainConfig(
        inputs=inputs.train_text,
        out=str(ctx.directory),
        vocab_size=config.vocab_size,
        lowercase=config.lowercase,
    )
    train_wordpiece(options)
    return {"directory": str(ctx.directory), "inputs": inputs.train_text}


def prepare_shards(inputs: Inputs, ctx: StageContext) -> dict:
    shutil.rmtree(ctx.directory, ignore_errors=True)
    tokenizer, manifests = str(ctx.out / "tokenizer"), {}
    for split, text in (("train", inputs.train_text), ("valid", inputs.valid_text)):
        prepare_corpus(
            PrepareConfig(inputs=text, tokenizer=tokenizer, out=str(ctx.directory / split))
        )
        manifest = json.loads((ctx.directory / split / "manifest.json").read_text())
        manifests[split] = {k: manifest[k] for k in ("documents", "sentences", "tokens")}
    return manifests


def _fresh_or_resumed(directory: Path) -> bool:
    """True when an interrupted run left a checkpoint (or a finished phase) to resume from;
    otherwise start clean."""
    found = list(checkpoints(directory / "checkpoints"))
    for phase in sorted(directory.glob("phase-*")):  # pretrain() skips a finished phase
        found += checkpoints(phase / "checkpoints")
        if (phase / "result.json").is_file():
            found.append(phase)
    if found:
        print(f"  resuming from {found[-1]}")
        return True
    shutil.rmtree(directory, ignore_errors=True)
    return False


def bert_recipe(config: QuickstartConfig, ctx: StageContext, resume: bool) -> PretrainConfig:
    """BERT_PHASES one after the other (a phase's micro-batch is its batch) under the stage's
    loop seconds; BERT_PRETRAINING's objective, rate, warmup and masking for every phase."""
    shards = ctx.out / "shards"
    phases = [Phase(**phase, micro_batch_size=phase["batch_size"]) for phase in BERT_PHASES]
    return from_options(
        PretrainConfig,
        train_data=str(shards / "train"),
        valid_data=str(shards / "valid"),
        out=str(ctx.directory),
        model=config.bert_model,
        **BERT_PRETRAINING,
        batch_size=BERT_PHASES[-1]["batch_size"],
        micro_batch_size=BERT_PHASES[-1]["batch_size"],
        eval_instances=512,
        max_steps=config.max_pretrain_steps,
        time_budget=f"{LOOP_SHARE * ctx.seconds:.1f}",
        log_every=10,
        eval_every=200,
        save_every=200,
        seed=config.seed,
        resume=resume,
        device=config.device,
        phases=phases,
    )


def pretrain_bert(config: QuickstartConfig, ctx: StageContext) -> dict:
    resume = _fresh_or_resumed(ctx.directory)
    recipe = bert_recipe(config, ctx, resume)
    result = pretrain(recipe)
    saved = json.loads((ctx.directory / "result.json").read_text(encoding="utf-8"))
    phases = saved["phases"]  # each phase's own steps, tokens and seconds
    total = {
        "step": sum(r["step"] for r in phases),
        "tokens_seen": sum(r["tokens_seen"] for r in phases),
        "elapsed_seconds": sum(r["elapsed_seconds"] for r in phases),
        "train_loss": result["train_loss"],
        "stopped": result["stopped"],
    }
    summary = {**_run_summary(total), "eval": result["eval"]}
    summary["phases"] = [
        {
            "max_seq_length": plan.max_seq_length,
            "batch_size": plan.batches.batch_size,
            "steps": r["step"],
            "tokens": r["tokens_seen"],
            "train_seconds": r["elapsed_seconds"],
            "stopped": r["stopped"],
            "eval": r["eval"],
            "unigram_baseline": held_out_unigram_baseline(plan),
        }
        for plan, r in zip(recipe.phase_configs(), phases, strict=True)
    ]
    # The last phase's held-out batches are the ones the final model is judged on.
    summary["unigram_baseline"] = summary["phases"][-1]["unigram_baseline"]
    return summary


def held_out_unigram_baseline(recipe: PretrainConfig) -> dict:
    """The unigram baseline (tasks/baselines.py) on the masked targets of the held-out batches
    this (phase's) run evaluates on, from the training shards' token counts."""
    tokenizer = load_tokenizer(recipe.train_data)
    shards = ShardedCorpus(recipe.train_data).shards
    counts = unigram_counts((shard.tokens for shard in shards), tokenizer.vocab_size)
    batches = held_out_batches(recipe, tokenizer)
    targets = np.concatenate([b["labels"][b["labels"] != -100].numpy() for b in batches])
    return unigram_baseline(counts, targets)


def _run_summary(result: dict) -> dict:
    """What the report and the fine-tuning plans read of a pretraining run."""
    seconds = max(result["elapsed_seconds"], 1e-9)
    return {
        "steps": result["step"],
        "stopped": result["stopped"],
        "tokens": result["tokens_seen"],
        "tokens_per_second": result["tokens_seen"] / seconds,
        "train_seconds": result["elapsed_seconds"],
        "train_loss": result["train_loss"],
    }


def pretrain_bilm(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    resume = _fresh_or_resumed(ctx.directory)
    # An adaptive softmax for a big vocabulary: the full softmax's backward was a third of the
    # elmo-small step (0.32 s -> 0.22 s per 32 x 20 tokens on one core).
    vocab = ELMO_PRESETS[config.elmo_model]["vocab_size"]
    cutoffs = [2000] if vocab > 4000 else None
    recipe = from_options(
        ElmoPretrainConfig,
        train_data=inputs.train_text,
        valid_data=inputs.valid_text,
        out=str(ctx.directory),
        model=config.elmo_model,
        adaptive_softmax_cutoffs=cutoffs,
        window=20,
        batch_size=32,
        micro_batch_size=32,
        eval_windows=512,
        max_steps=config.max_pretrain_steps,
        time_budget=f"{LOOP_SHARE * ctx.seconds:.1f}",
        warmup_ratio=0.05,
        log_every=10,
        eval_every=100,
        save_every=100,
        seed=config.seed,
        resume=resume,
        device=config.device,
        threads=config.threads,
    )
    result = pretrain_elmo(recipe)
    vocabulary = result["vocabulary"]["size"]
    return {**_run_summary(result), "perplexity": result["perplexity"], "vocabulary": vocabulary}


def fill_mask_examples(ctx: StageContext) -> dict:
    model, _, tokenizer = load_pretrained(ctx.out / "bert")
    examples = []
    for text in FILL_MASK_TEXTS:
        (predictions,) = fill_mask(model, tokenizer, text, top_k=5)
        examples.append({"text": text, "predictions": [[t, p] for t, p in predictions]})
    return {"examples": examples}


# ---------------------------------------------------------------- fine-tuning and report


def write_report(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    done, rows = ctx.done, comparison.row_needs(config)
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
        "pretraining": {"bert": done["bert"], "elmo": done["elmo"]},
        "data": {"shards": done["shards"]},
        "fill_mask": done["fill-mask"]["examples"],
        "models": {"bert": config.bert_model, "elmo": config.elmo_model},
    }
    files = report.write_report(ctx.out, summary)
    return {"files": [str(f) for f in files]}
