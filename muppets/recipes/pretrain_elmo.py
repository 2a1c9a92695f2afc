"""`muppets pretrain-elmo` (also `muppets pretrain --model elmo-*`): text -> ELMo biLM -> train().

The recipe composes: one pass over the training text counts its words (data/streams.py), the word
vocabulary keeps the `vocab_size` most frequent ones seen at least `min_count` times (the preset's
vocab_size by default; the rest become <UNK>), the model is an ELMo preset sized to that vocabulary,
and the loop trains it on stateless windows of the text. Held-out perplexity is exp(loss) of the
valid text, the loss being the mean NLL over both directions' targets: the geometric mean of the
forward and backward perplexities, as bilm-tf's run_test.py reports it.

A checkpoint directory: config.json (ElmoConfig, "model_type": "elmo"), model.safetensors
(ElmoBiLM's state-dict names), word_vocab.txt (bilm-tf's vocabulary format); `load_elmo` reads it.
Works unchanged under `torchrun --nproc_per_node N` (every rank builds the same vocabulary).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from muppets.data.streams import (
    StreamStats,
    WindowBatches,
    corpus_sentences,
    count_words,
    evaluation_windows,
)
from muppets.data.text import resolve_inputs
from muppets.errors import ConfigError, InputError
from muppets.models.elmo import PRESETS, ElmoBiLM, ElmoConfig
from muppets.tasks.objectives import BiLMLoss, BiLMObjective, count_bilm_targets
from muppets.tokenization.words import WordVocabulary, build_word_vocabulary
from muppets.training import distributed as dist
from muppets.training.device import start_run, torch_threads
from muppets.training.loop import TrainConfig, train
from muppets.training.options import (
    Batches,
    Logging,
    Optimization,
    Precision,
    Steps,
    check,
    device_option,
    flat_options,
    group,
    option,
)
from muppets.training.pretrained import WORD_VOCABULARY_FILE


@dataclass
class ElmoPretrainConfig:
    train_data: list[str] = option("text files or globs (plain, WikiExtractor or jsonl)", None)
    valid_data: list[str] | None = option("held-out text for perplexity", None)
    out: str = option("run directory: checkpoints, metrics.jsonl, loss.png", "runs/pretrain-elmo")
    model: str = option("preset: " + ", ".join(PRESETS), "elmo-small")
    format: str = option("auto, text, wiki or jsonl", "auto")
    # vocabulary and windows
    vocab_size: int | None = option(
        "most words kept, specials included (default: the preset's)", None
    )
    min_count: int = option("words seen fewer times become <UNK>", 1)
    window: int = option("tokens per window (bilm-tf unroll_steps)", 20)
    shuffle_windows: int = option("windows shuffled together (0: corpus order)", 4096)
    eval_windows: int = option("held-out windows per evaluation (0: all)", 2048)
    batches: Batches = group(Batches, batch_size=32, micro_batch_size=32)
    # model overrides
    dropout: float | None = option("dropout (default: the preset's)", None)
    adaptive_softmax_cutoffs: list[int] | None = option("adaptive softmax cutoffs", None)
    # optimisation (bilm-tf: no weight decay, clipping at 10), the run, logging
    optimization: Optimization = group(
        Optimization, learning_rate=1e-3, warmup_steps=200, weight_decay=0.0, max_grad_norm=10.0
    )
    run: Steps = group(Steps, max_steps=5_000)
    logging: Logging = group(Logging)
    device: str = device_option()
    arithmetic: Precision = group(Precision)
    threads: int = option("torch CPU threads per process (0: torch's default)", 0)

    def __post_init__(self):
        if not self.train_data:
            raise ConfigError("train_data is required (text files or globs)")
        if self.model not in PRESETS:
            raise ConfigError(f"unknown ELMo preset {self.model!r} (valid: {', '.join(PRESETS)})")
        rules = [
            ("vocab_size", self.vocab_size is None or self.vocab_size >= 5, ">= 5"),
            ("min_count", self.min_count >= 1, ">= 1"),
            ("window", self.window >= 1, ">= 1"),
            ("shuffle_windows", self.shuffle_windows >= 0, ">= 0"),
            ("eval_windows", self.eval_windows >= 0, ">= 0"),
            ("threads", self.threads >= 0, ">= 0"),
        ]
        check(self, rules)
        check(self.batches, [("batch_size", self.batches.batch_size >= 1, ">= 1")])
        self.train_config(1)  # TrainConfig's own checks, now rather than after the word count

    def train_config(self, accumulation: int, precision: str = "fp32") -> TrainConfig:
        """The loop's config; `precision`: the resolved one (arithmetic.start)."""
        return TrainConfig(
            **self.optimization.loop_options(),
            **self.run.loop_options(),
            **self.logging.loop_options(),
            gradient_accumulation_steps=accumulation,
            precision=precision,
        )

    def model_config(self, vocab_size: int) -> ElmoConfig:
        values = {**PRESETS[self.model], "vocab_size": vocab_size}
        if self.dropout is not None:
            values["dropout"] = self.dropout
        if self.adaptive_softmax_cutoffs is not None:
            values["adaptive_softmax_cutoffs"] = self.adaptive_softmax_cutoffs
        return ElmoConfig(**values)


def build_vocabulary(config: ElmoPretrainConfig, stats: StreamStats) -> tuple[WordVocabulary, int]:
    """The training text's words, most frequent first, and how many of the text's words are not
    in it (become <UNK>). One pass over the text, which fills `stats`."""
    counts = count_words(corpus_sentences(config.train_data, config.format, stats=stats))
    max_size = config.vocab_size or PRESETS[config.model]["vocab_size"]
    vocabulary = build_word_vocabulary(counts, config.min_count, max_size)
    unknown = sum(n for w, n in counts.items() if vocabulary.token_to_id(w) == vocabulary.unk_id)
    return vocabulary, unknown


def pretrain_elmo(config: ElmoPretrainConfig) -> dict:
    """Train, evaluate, write result.json; torch's thread count is restored afterwards."""
    with torch_threads(config.threads):
        return _pretrain_elmo(config)


def _pretrain_elmo(config: ElmoPretrainConfig) -> dict:
    for name in ("train_data", "valid_data"):  # a missing file is said with the option's name
        try:
            if getattr(config, name):
                resolve_inputs(getattr(config, name))
        except InputError as error:
            raise ConfigError(f"{name} {error.path}: {error.message}") from None
    info, config = start_run(config)
    rank, world = dist.rank(), dist.world_size()
    out = Path(config.out)
    stats = StreamStats()
    vocabulary, unknown_words = build_vocabulary(config, stats)
    saved_vocabulary = out / WORD_VOCABULARY_FILE
    if config.run.resume and saved_vocabulary.is_file():
        if WordVocabulary.load(saved_vocabulary).tokens != vocabulary.tokens:
            raise InputError(
                "the vocabulary of train_data differs from the run's: the text changed",
                saved_vocabulary,
            )
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        vocabulary.save(saved_vocabulary)
    accumulation = config.batches.accumulation(world)
    batches = WindowBatches(
        config.train_data,
        vocabulary,
        window=config.window,
        batch_size=config.batches.micro_batch_size,
        shuffle_windows=config.shuffle_windows,
        seed=config.run.seed,
        format=config.format,
        rank=rank,
        world_size=world,
    )
    eval_fn, held_out = None, []
    if config.valid_data:
        held_out = evaluation_windows(
            config.valid_data,
            vocabulary,
            window=config.window,
            batch_size=config.batches.micro_batch_size,
            max_windows=config.eval_windows or None,
            format=config.format,
            rank=rank,
            world_size=world,
        )

        def eval_fn():
            return held_out

    model_config = config.model_config(len(vocabulary))
    torch.manual_seed(config.run.seed)  # the same initial weights on every rank
    model = BiLMLoss(ElmoBiLM(model_config)).to(info.device)
    result = train(
        model,
        BiLMObjective(),
        batches,
        config.train_config(accumulation, config.arithmetic.precision),
        out,
        config_dict=model_config.to_dict(),
        eval_batches_fn=eval_fn,
        resume=config.run.resume,
        resume_from=config.run.resume_from,
        extra_files=[saved_vocabulary],
        restart="--resume-from {checkpoint} and a lower --learning-rate",  # no --init-from here
    )
    lm_loss = (result.get("eval") or {}).get("lm_loss")
    valid_targets = sum(count_bilm_targets(b) for b in held_out)
    result["perplexity"] = math.exp(lm_loss) if lm_loss is not None else None
    total = dist.all_reduce_sum(torch.tensor([valid_targets], device=info.device))
    result["valid_targets"] = int(total.item())
    result["corpus"] = stats.as_dict()
    result["vocabulary"] = {
        "size": len(vocabulary),
        "file": WORD_VOCABULARY_FILE,
        "unknown_words": unknown_words,
    }
    if rank == 0:
        summary = {"config": flat_options(config), **result}
        (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(_summary_line(result))
    dist.cleanup()
    return result


def _summary_line(result: dict) -> str:
    corpus = result["corpus"]
    held_out = ""
    if result["perplexity"] is not None:
        held_out = f"; held-out perplexity {result['perplexity']:.2f}"
        held_out += f" ({result['valid_targets']:,} targets)"
    empty = f"{corpus['empty_sentences']:,} empty sentences skipped"
    if corpus["first_empty"]:
        empty += f" (first at {corpus['first_empty']})"
    return (
        f"pretrain-elmo: {result['step']} steps ({result['stopped']}), "
        f"{result['tokens_seen']:,} tokens, train loss {result['train_loss']:.4f}{held_out}; "
        f"vocabulary {result['vocabulary']['size']:,} words, "
        f"{result['vocabulary']['unknown_words']:,} of {corpus['words']:,} words <UNK>; {empty}, "
        f"{corpus['empty_documents']:,} empty documents; checkpoint {result['checkpoint']}"
    )
