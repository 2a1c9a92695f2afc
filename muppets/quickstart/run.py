"""`muppets quickstart`: the whole story in one command, stage by stage, under one budget.

On the bundled sample (muppets/samples: 2 MB of Wikipedia, 6,000 SST-2 sentences) by default, or
with `--data-dir DIR` on DIR/wikipedia-en-extract/wiki.train.0*.txt and DIR/glue/SST-2:
  1. a WordPiece tokenizer trained on the text, and the text tokenized into shards;
  2. a small BERT pretrained (MLM + NSP) and a small ELMo biLM, each under a time budget;
  3. SST-2: the BERT fine-tuned, the BERT frozen under a linear head, the same architecture from
     scratch, the ELMo frozen under a biLSTM, random embeddings under the same biLSTM, and a bag
     of (random, trained) embeddings; one seed each;
  4. a fill-mask example, a comparison table, report.html, report.json and the PNG figures.
Each stage runs in `<out>/<stage>/` and leaves a done.json (stages.py): Ctrl-C and the same
command again resume from the finished stages. `<out>/settings.json` pins the settings that
decide the results; another `--budget` or `--data-dir` needs another `--out`.

The budget (`--budget`, 12m on the sample, 1h with --data-dir) is split over the stages by the
fixed SHARES below. Pretraining gets its share as the loop's time budget (less what the stage
spends around the loop: the vocabulary pass, held-out evaluation, saving). Fine-tuning has no time
cap, so its epochs, and if even one epoch does not fit a random subset of the training set, are
sized to the share (comparison.py): the cost per token of each kind of run is a fixed multiple
of the BERT pretraining throughput just measured on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from muppets.data.prepare import PrepareConfig, TokenizerTrainConfig, prepare_corpus
from muppets.data.prepare import train_tokenizer as train_wordpiece
from muppets.errors import ConfigError
from muppets.models.elmo import PRESETS as ELMO_PRESETS
from muppets.quickstart import comparison, report
from muppets.quickstart.config import Inputs, QuickstartConfig, find_inputs
from muppets.quickstart.stages import Stage, StageContext, run_stages
from muppets.recipes.fill_mask import fill_mask
from muppets.recipes.pretrain import PretrainConfig, pretrain
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig, pretrain_elmo
from muppets.training.checkpoint import checkpoints
from muppets.training.options import from_options
from muppets.training.pretrained import load_pretrained

__all__ = ["QuickstartConfig", "run_quickstart"]  # QuickstartConfig: defined in config.py

# Shares of the budget; they add up to 1.
SHARES = {
    "tokenizer": 0.01,
    "shards": 0.02,
    "bert": 0.35,
    "elmo": 0.22,
    "fill-mask": 0.01,
    "bert-finetuned": 0.08,
    "bert-frozen": 0.03,
    "bert-scratch": 0.08,
    "elmo-bilstm": 0.08,
    "random-bilstm": 0.08,
    "bag-of-embeddings": 0.02,
    "report": 0.02,
}
LOOP_SHARE = 0.85  # of a pretraining stage's seconds, for the training loop itself
FILL_MASK_TEXTS = (
    "he was born in [MASK] .",
    "the film was released in [MASK] .",
    "she is an american [MASK] and writer .",
)


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run (or resume) every stage; print the table; returns report.json's contents."""
    out, inputs = Path(config.out), find_inputs(config)
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


def pin_settings(config: QuickstartConfig, out: Path) -> None:
    """settings.json: what decides the results. A resumed run must have the same."""
    unpinned = ("out", "threads", "device")  # where and how fast, not what
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in unpinned}
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
    def stage(name, title, run, needs=()):
        return Stage(name, title, SHARES[name], run, needs)

    def row_stage(row: str, needs: tuple[str, ...]) -> Stage:
        def run(ctx: StageContext) -> dict:
            return comparison.run_row(row, config, inputs.sst2, ctx)

        return stage(row, f"SST-2: {report.ROWS[row]}", run, needs)

    tokenizer_title = f"train a {config.vocab_size:,}-token WordPiece tokenizer"
    bert_title = f"pretrain BERT ({config.bert_model}, MLM + NSP)"
    elmo_title = f"pretrain ELMo ({config.elmo_model}, biLM)"
    report_needs = ("shards", "bert", "elmo", "fill-mask", *comparison.NEEDS)
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
        *(row_stage(row, needs) for row, needs in comparison.NEEDS.items()),
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
    """True when an interrupted run left a checkpoint to resume; otherwise start clean."""
    if checkpoints(directory / "checkpoints"):
        print(f"  resuming from {checkpoints(directory / 'checkpoints')[-1]}")
        return True
    shutil.rmtree(directory, ignore_errors=True)
    return False


def pretrain_bert(config: QuickstartConfig, ctx: StageContext) -> dict:
    shards = ctx.out / "shards"
    resume = _fresh_or_resumed(ctx.directory)
    recipe = from_options(
        PretrainConfig,
        train_data=str(shards / "train"),
        valid_data=str(shards / "valid"),
        out=str(ctx.directory),
        model=config.bert_model,
        objective="mlm+nsp",
        max_seq_length=128,
        batch_size=32,
        micro_batch_size=32,
        eval_instances=512,
        max_steps=config.max_pretrain_steps,
        time_budget=f"{LOOP_SHARE * ctx.seconds:.1f}",
        learning_rate=1e-3,
        warmup_ratio=0.06,
        log_every=10,
        eval_every=200,
        save_every=200,
        seed=config.seed,
        resume=resume,
        device=config.device,
    )
    result = pretrain(recipe)
    return {**_run_summary(result), "eval": result["eval"]}


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
    done = ctx.done
    rows = [{"name": row, "model": report.ROWS[row], **done[row]} for row in comparison.NEEDS]
    summary = {
        "settings": json.loads((ctx.out / "settings.json").read_text()),
        "rows": rows,
        "majority": comparison.majority_share(inputs.sst2 / "dev.tsv"),
        "dev_size": rows[0]["dev_examples"],
        "pretraining": {"bert": done["bert"], "elmo": done["elmo"]},
        "data": {"shards": done["shards"]},
        "fill_mask": done["fill-mask"]["examples"],
        "models": {"bert": config.bert_model, "elmo": config.elmo_model},
    }
    files = report.write_report(ctx.out, summary)
    return {"files": [str(f) for f in files]}
