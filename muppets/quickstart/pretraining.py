"""The quickstart's stages before the comparison: the tokenizer, the shards (and the speed that
is the comparison plan's unit), BERT pretraining in phases beside its unigram baseline, ELECTRA
pretraining in the same phases, ELMo pretraining, and the fill-mask example. Each is a stage
function (stages.py) of run.py's list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from muppets.data.prepare import PrepareConfig, TokenizerTrainConfig, prepare_corpus
from muppets.data.prepare import train_tokenizer as train_wordpiece
from muppets.data.shards import ShardedCorpus
from muppets.models.elmo import PRESETS as ELMO_PRESETS
from muppets.quickstart.calibrate import bert_tokens_per_second
from muppets.quickstart.config import (
    BERT_PHASES,
    BERT_PRETRAINING,
    ELECTRA_PRETRAINING,
    Inputs,
    QuickstartConfig,
)
from muppets.quickstart.stages import StageContext
from muppets.recipes.fill_mask import fill_mask
from muppets.recipes.pretrain import Phase, PretrainConfig, held_out_batches, pretrain
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig, pretrain_elmo
from muppets.tasks.baselines import unigram_baseline, unigram_counts
from muppets.tokenization.wordpiece import load_tokenizer
from muppets.training.checkpoint import checkpoints
from muppets.training.options import from_options
from muppets.training.pretrained import load_pretrained

LOOP_SHARE = 0.85  # of a pretraining stage's seconds, for the training loop itself
FILL_MASK_TEXTS = (
    "he was born in [MASK] .",
    "the film was released in [MASK] .",
    "she is an american [MASK] and writer .",
)


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


def prepare_shards(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    """The shards, and the tokens per second this machine trains the BERT preset at: the unit of
    the comparison's plan, known before the lanes start (calibrate.py)."""
    shutil.rmtree(ctx.directory, ignore_errors=True)
    tokenizer, manifests = str(ctx.out / "tokenizer"), {}
    for split, text in (("train", inputs.train_text), ("valid", inputs.valid_text)):
        prepare_corpus(
            PrepareConfig(inputs=text, tokenizer=tokenizer, out=str(ctx.directory / split))
        )
        manifest = json.loads((ctx.directory / split / "manifest.json").read_text())
        manifests[split] = {k: manifest[k] for k in ("documents", "sentences", "tokens")}
    speed = bert_tokens_per_second(config.bert_model, config.vocab_size, config.precision)
    unit = f"{config.precision}, the fine-tuning plan's unit"
    print(f"{config.bert_model} trains at {speed:,.0f} tokens/s here ({unit})")
    return {"manifests": manifests, "bert_tokens_per_second": speed}


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


def loop_options(config: QuickstartConfig, ctx: StageContext, resume: bool, every: int) -> dict:
    """What both pretraining stages give their loop: the stage's seconds (less what it spends
    around the loop) as the time budget, a held-out evaluation and a checkpoint every `every`
    steps, the quickstart's seed, device and precision (resolved once: run.resolve_arithmetic)."""
    return {
        "max_steps": config.max_pretrain_steps,
        "time_budget": f"{LOOP_SHARE * ctx.seconds:.1f}",
        "log_every": 10,
        "eval_every": every,
        "save_every": every,
        "seed": config.seed,
        "resume": resume,
        "device": config.device,
        "precision": config.precision,
        "force_precision": config.force_precision,
    }


def bert_recipe(
    config: QuickstartConfig, ctx: StageContext, resume: bool, electra: bool = False
) -> PretrainConfig:
    """BERT_PHASES one after the other (a phase's micro-batch is its batch) under the stage's
    loop seconds; BERT_PRETRAINING's objective, rate, warmup and masking for every phase. With
    `electra`, the same phases and shards for the ELECTRA preset under ELECTRA_PRETRAINING."""
    shards = ctx.out / "shards"
    phases = [Phase(**phase, micro_batch_size=phase["batch_size"]) for phase in BERT_PHASES]
    return from_options(
        PretrainConfig,
        train_data=str(shards / "train"),
        valid_data=str(shards / "valid"),
        out=str(ctx.directory),
        model=config.electra_model if electra else config.bert_model,
        **(ELECTRA_PRETRAINING if electra else BERT_PRETRAINING),
        batch_size=BERT_PHASES[-1]["batch_size"],
        micro_batch_size=BERT_PHASES[-1]["batch_size"],
        eval_instances=512,
        **loop_options(config, ctx, resume, every=200),
        phases=phases,
    )


def pretrain_bert(config: QuickstartConfig, ctx: StageContext, electra: bool = False) -> dict:
    """BERT's (or with `electra` ELECTRA's) phased pretraining; each phase's held-out scores,
    and for BERT the unigram baseline of its held-out masked tokens."""
    resume = _fresh_or_resumed(ctx.directory)
    recipe = bert_recipe(config, ctx, resume, electra)
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
        }
        for plan, r in zip(recipe.phase_configs(), phases, strict=True)
    ]
    if electra:  # it masks again inside the step: the pipeline's masked tokens are not its own
        return summary
    for phase, plan in zip(summary["phases"], recipe.phase_configs(), strict=True):
        phase["unigram_baseline"] = held_out_unigram_baseline(plan)
    # The last phase's held-out batches are the ones the final model is judged on.
    summary["unigram_baseline"] = summary["phases"][-1]["unigram_baseline"]
    return summary


def pretrain_electra(config: QuickstartConfig, ctx: StageContext) -> dict:
    return pretrain_bert(config, ctx, electra=True)


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
        warmup_ratio=0.05,
        **loop_options(config, ctx, resume, every=100),
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
