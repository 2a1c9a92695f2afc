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

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from muppets.data.streams import (
    StreamStats,
    WindowBatches,
    corpus_sentences,
    count_words,
    evaluation_windows,
)
from muppets.errors import ConfigError, InputError
from muppets.models.elmo import PRESETS, ElmoBiLM, ElmoConfig
from muppets.tasks.objectives import BiLMLoss, BiLMObjective, count_bilm_targets
from muppets.tokenization.words import WordVocabulary, build_word_vocabulary
from muppets.training import distributed as dist
from muppets.training.budget import parse_duration
from muppets.training.loop import TrainConfig, train
from muppets.training.options import recipe_train_config
from muppets.training.pretrained import WORD_VOCABULARY_FILE


def _help(text: str, default, **more):
    return field(default=default, metadata={"help": text}, **more)


@dataclass
class ElmoPretrainConfig:
    train_data: list[str] = _help("text files or globs (plain, WikiExtractor or jsonl)", None)
    valid_data: list[str] | None = _help("held-out text for perplexity", None)
    out: str = _help("run directory: checkpoints, metrics.jsonl, loss.png", "runs/pretrain-elmo")
    model: str = _help("preset: " + ", ".join(PRESETS), "elmo-small")
    format: str = _help("auto, text, wiki or jsonl", "auto")
    # vocabulary and windows
    vocab_size: int | None = _help(
        "most words kept, specials included (default: the preset's)", None
    )
    min_count: int = _help("words seen fewer times become <UNK>", 1)
    window: int = _help("tokens per window (bilm-tf unroll_steps)", 20)
    shuffle_windows: int = _help("windows shuffled together (0: corpus order)", 4096)
    batch_size: int = _help("windows per optimizer step, over all processes", 32)
    micro_batch_size: int = _help("windows per forward pass (gradient accumulation)", 32)
    eval_windows: int = _help("held-out windows per evaluation (0: all)", 2048)
    # model overrides
    dropout: float | None = _help("dropout (default: the preset's)", None)
    adaptive_softmax_cutoffs: list[int] | None = _help("adaptive softmax cutoffs", None)
    # optimisation
    max_steps: int = _help("optimizer steps (an upper bound with --time-budget)", 5_000)
    time_budget: str | None = _help("wall-clock budget (30m, 1h): sets the schedule length", None)
    learning_rate: float = _help("peak AdamW learning rate", 1e-3)
    schedule: str = _help("linear, cosine or constant after warmup", "linear")
    warmup_steps: int = _help("warmup steps", 200)
    warmup_ratio: float | None = _help("warmup as a share of all steps (overrides steps)", None)
    weight_decay: float = _help("AdamW weight decay (bilm-tf: none)", 0.0)
    max_grad_norm: float = _help("gradient clipping norm (bilm-tf: 10)", 10.0)
    log_every: int = _help("steps between log records", 50)
    eval_every: int = _help("steps between evaluations (0: at the end)", 500)
    save_every: int = _help("steps between checkpoints (0: at the end)", 500)
    seed: int = _help("seed of weights, window order and dropout", 0)
    resume: bool = _help("continue the run in --out from its last checkpoint", False)
    device: str = _help("cpu, cuda or auto", "auto")
    threads: int = _help("torch CPU threads per process (0: torch's default)", 0)

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
            ("micro_batch_size", self.micro_batch_size >= 1, ">= 1"),
            (
                "batch_size",
                self.batch_size % max(self.micro_batch_size, 1) == 0,
                "a multiple of micro_batch_size",
            ),
            ("eval_windows", self.eval_windows >= 0, ">= 0"),
            ("threads", self.threads >= 0, ">= 0"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        self.train_config(1)  # TrainConfig's own checks, now rather than after the word count

    def accumulation(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x {world_size} processes"
            )
        return self.batch_size // per_step

    def train_config(self, accumulation: int) -> TrainConfig:
        return recipe_train_config(self, accumulation)

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
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _pretrain_elmo(config)
    finally:
        torch.set_num_threads(threads)


def _pretrain_elmo(config: ElmoPretrainConfig) -> dict:
    info = dist.init_distributed(None if config.device == "auto" else config.device)
    rank, world = dist.rank(), dist.world_size()
    out = Path(config.out)
    stats = StreamStats()
    vocabulary, unknown_words = build_vocabulary(config, stats)
    saved_vocabulary = out / WORD_VOCABULARY_FILE
    if config.resume and saved_vocabulary.is_file():
        if WordVocabulary.load(saved_vocabulary).tokens != vocabulary.tokens:
            raise InputError(
                "the vocabulary of train_data differs from the run's: the text changed",
                saved_vocabulary,
            )
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        vocabulary.save(saved_vocabulary)
    accumulation = config.accumulation(world)
    batches = WindowBatches(
        config.train_data,
        vocabulary,
        window=config.window,
        batch_size=config.micro_batch_size,
        shuffle_windows=config.shuffle_windows,
        seed=config.seed,
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
            batch_size=config.micro_batch_size,
            max_windows=config.eval_windows or None,
            format=config.format,
            rank=rank,
            world_size=world,
        )

        def eval_fn():
            return held_out

    model_config = config.model_config(len(vocabulary))
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = BiLMLoss(ElmoBiLM(model_config)).to(info.device)
    result = train(
        model,
        BiLMObjective(),
        batches,
        config.train_config(accumulation),
        out,
        config_dict=model_config.to_dict(),
        eval_batches_fn=eval_fn,
        resume=config.resume,
        extra_files=[saved_vocabulary],
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
        summary = {"config": dataclasses.asdict(config), **result}
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
