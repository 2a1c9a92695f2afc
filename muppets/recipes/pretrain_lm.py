"""`muppets pretrain-lm` (also `muppets pretrain --model transfo-xl-* --objective clm`):
prepared shards -> contiguous streams -> Transformer-XL with carried memories -> train().

The shards directory's documents, each followed by an eos token (the tokenizer's [SEP] or </s>,
as the reference appends <eos> to every line), form one stream, cut into batch_size rows read
tgt_len tokens at a time (data/lm_streams.py, LMOrderedIterator). Each micro-batch (a share of
the rows, the reference's batch_chunk) keeps its memories from one segment to the next, and a
checkpoint saves them with the data position (tasks/causal_lm.py). Defaults are the reference's
run_wt103_base.sh optimisation: Adam at 2.5e-4, cosine decay, clipping at 0.25, no decay.
Held-out loss (valid_data: shards) runs over the first eval_segments segments with memories.

A checkpoint directory: config.json (TransfoXLConfig), model.safetensors (TransfoXLLMHeadModel's
names) and the tokenizer files; training/pretrained.load_transfo_xl reads it (muppets evaluate-lm).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from muppets.data.lm_streams import OrderedSegments, SegmentBatches, ShardStream
from muppets.data.shards import ShardedCorpus
from muppets.errors import ConfigError
from muppets.models.registry import LM_PRESETS, lm_config
from muppets.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel
from muppets.tasks.causal_lm import CausalLMObjective, RowChunks, SegmentMemory, TransfoXLLoss
from muppets.tokenization.families import load_any_tokenizer
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
from muppets.training.pretrained import TOKENIZER_FILES, eos_id

OBJECTIVES = ("clm",)


@dataclass
class LMPretrainConfig:
    train_data: str = option("shards directory from `muppets prepare`", "")
    valid_data: str | None = option("held-out shards directory for evaluation", None)
    out: str = option("run directory: checkpoints, metrics.jsonl, loss.png", "runs/pretrain-lm")
    model: str = option("preset: " + ", ".join(LM_PRESETS), "transfo-xl-tiny")
    objective: str = option("clm: next-token prediction (the only one for these models)", "clm")
    tgt_len: int | None = option("tokens per segment (default: the preset's)", None)
    mem_len: int | None = option("memory length, 0: no recurrence (default: the preset's)", None)
    clamp_len: int = option("relative distances clamped to this (0: no clamp)", 0)
    same_length: bool = option("every query sees the same number of keys", False)
    pre_layer_norm: bool = option("pre-LN layers instead of the paper's post-LN", False)
    dropout: float | None = option("dropout (default: the preset's)", None)
    dropatt: float | None = option("attention dropout (default: the preset's)", None)
    eval_segments: int = option("held-out segments per evaluation (0: all)", 64)
    batches: Batches = group(Batches, batch_size=16, micro_batch_size=16)
    optimization: Optimization = group(
        Optimization,
        learning_rate=2.5e-4,
        schedule="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=0.25,
    )
    run: Steps = group(Steps, max_steps=2_000)
    logging: Logging = group(Logging)
    device: str = device_option()
    arithmetic: Precision = group(Precision)
    threads: int = option("torch CPU threads per process (0: torch's default)", 0)

    def __post_init__(self):
        if not self.train_data:
            raise ConfigError("train_data is required (a shards directory from muppets prepare)")
        if self.model not in LM_PRESETS:
            raise ConfigError(f"unknown model {self.model!r} (valid: {', '.join(LM_PRESETS)})")
        rules = [
            ("objective", self.objective in OBJECTIVES, "one of " + ", ".join(OBJECTIVES)),
            ("tgt_len", self.tgt_len is None or self.tgt_len >= 1, ">= 1"),
            ("mem_len", self.mem_len is None or self.mem_len >= 0, ">= 0"),
            ("clamp_len", self.clamp_len >= 0, ">= 0"),
            ("eval_segments", self.eval_segments >= 0, ">= 0"),
            ("threads", self.threads >= 0, ">= 0"),
        ]
        check(self, rules)
        self.model_config(8)  # the config's own checks now

    def train_config(self, accumulation: int, precision: str = "fp32") -> TrainConfig:
        return TrainConfig(
            **self.optimization.loop_options(),
            **self.run.loop_options(),
            **self.logging.loop_options(),
            gradient_accumulation_steps=accumulation,
            precision=precision,
        )

    def model_config(self, vocab_size: int) -> TransfoXLConfig:
        values = {"vocab_size": vocab_size, "clamp_len": self.clamp_len}
        values["same_length"], values["pre_lnorm"] = self.same_length, self.pre_layer_norm
        for name in ("tgt_len", "mem_len", "dropout", "dropatt"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return lm_config(self.model, **values)


def pretrain_lm(config: LMPretrainConfig) -> dict:
    """Train, evaluate, write result.json; torch's thread count is restored afterwards."""
    with torch_threads(config.threads):
        return _pretrain_lm(config)


def _pretrain_lm(config: LMPretrainConfig) -> dict:
    info, config = start_run(config)
    rank, world = dist.rank(), dist.world_size()
    tokenizer = load_any_tokenizer(config.train_data)
    corpus = ShardedCorpus(config.train_data)
    corpus.check_tokenizer(tokenizer.fingerprint())
    model_config = config.model_config(tokenizer.vocab_size)
    eos = eos_id(tokenizer)
    accumulation = config.batches.accumulation(world)
    segments = OrderedSegments(
        ShardStream(corpus, eos_id=eos),
        config.batches.batch_size,
        model_config.tgt_len,
        rank=rank,
        world_size=world,
    )
    memory = SegmentMemory()
    batches = RowChunks(SegmentBatches(segments), accumulation, memory)
    eval_fn = None
    if config.valid_data:
        valid = ShardedCorpus(config.valid_data)
        valid.check_tokenizer(tokenizer.fingerprint())
        held = OrderedSegments(
            ShardStream(valid, eos_id=eos),
            config.batches.micro_batch_size * world,
            model_config.tgt_len,
            rank=rank,
            world_size=world,
        )
        count = len(held) if not config.eval_segments else min(config.eval_segments, len(held))

        def eval_fn():
            return (held.segment(k) for k in range(count))

    torch.manual_seed(config.run.seed)  # the same initial weights on every rank
    model = TransfoXLLoss(TransfoXLLMHeadModel(model_config), memory).to(info.device)
    extra = [Path(config.train_data) / name for name in TOKENIZER_FILES]
    result = train(
        model,
        CausalLMObjective(),
        batches,
        config.train_config(accumulation, config.arithmetic.precision),
        config.out,
        config_dict=model_config.to_dict(),
        eval_batches_fn=eval_fn,
        resume=config.run.resume,
        resume_from=config.run.resume_from,
        extra_files=[p for p in extra if p.exists()],
        restart="--resume-from {checkpoint} and a lower --learning-rate",
    )
    lm_loss = (result.get("eval") or {}).get("lm_loss")
    result["perplexity"] = math.exp(lm_loss) if lm_loss is not None else None
    if rank == 0:
        summary = {"config": flat_options(config), **result}
        (Path(config.out) / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        held_out = ""
        if result["perplexity"] is not None:
            held_out = f"; held-out perplexity per piece {result['perplexity']:.2f}"
        print(
            f"pretrain-lm: {result['step']} steps ({result['stopped']}), "
            f"{result['tokens_seen']:,} tokens, train loss {result['train_loss']:.4f}"
            f"{held_out}; checkpoint {result['checkpoint']}"
        )
    dist.cleanup()
    return result
