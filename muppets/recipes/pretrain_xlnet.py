"""`muppets pretrain-xlnet` (also `muppets pretrain --model xlnet-* --objective plm`): prepared
shards -> one token stream -> XLNet permutation-LM batches with carried memories -> train().

Yang et al. 2019 sections 2.3-2.4 and zihangdai/xlnet train_gpu.py. The shards' documents, each
followed by an end-of-document token (as the reference's <eod>; the tokenizer's sep when it has
no "<eod>"), form one stream cut into batch_size rows (data/xlnet_instances.py: A/B pairs after
a reuse part, span targets, block permutations of perm_size, num_predict = seq_len //
partial_prediction targets). Each step reads the next reuse_len tokens of every row, so the reuse
part's hidden states, kept as memory (mem_len), precede the next step's tokens. Memories and data
position live in tasks/causal_lm.py's SegmentMemory / RowChunks (the Transformer-XL recipe's),
saved with every checkpoint: a resumed run is bitwise the uninterrupted one. Held-out PLM loss and
accuracy (valid_data) run over the first eval_steps batches of a stream of their own.

Defaults are the reference's proportions at CPU size: seq_len 128, reuse_len 64 (half), mem_len
96 (3/4), K = 6; Adam at 4e-4 with linear decay, weight decay 0.01, clipping at 1 (Table 7).
A checkpoint is config.json (XLNetConfig), model.safetensors (XLNetLMHeadModel's names) and the
tokenizer files: `muppets finetune --model <run>` and `muppets convert` read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from muppets.data.lm_streams import ShardStream
from muppets.data.permutation import PermutationConfig
from muppets.data.shards import ShardedCorpus
from muppets.data.xlnet_instances import XLNetBatches
from muppets.errors import ConfigError
from muppets.models.registry import PRESETS, preset_config
from muppets.models.xlnet import XLNetLMHeadModel
from muppets.tasks.causal_lm import RowChunks, SegmentMemory
from muppets.tasks.permutation_lm import PermutationLMObjective, XLNetPLMLoss
from muppets.tokenization.families import family_note, load_any_tokenizer
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
from muppets.training.pretrained import TOKENIZER_FILES

XLNET_PRESETS = [name for name, values in PRESETS.items() if values["model_type"] == "xlnet"]
OBJECTIVES = ("plm",)


@dataclass
class XLNetPretrainConfig:
    train_data: str = option("shards directory from `muppets prepare`", "")
    valid_data: str | None = option("held-out shards directory for evaluation", None)
    out: str = option("run directory: checkpoints, metrics.jsonl, loss.png", "runs/pretrain-xlnet")
    model: str = option("preset: " + ", ".join(XLNET_PRESETS), "xlnet-tiny")
    objective: str = option("plm: permutation LM with partial prediction (XLNet's)", "plm")
    seq_len: int = option("tokens per instance: reuse part + A <sep> B <sep> <cls>", 128)
    reuse_len: int = option("tokens per row and step, kept as the next step's memory", 64)
    mem_len: int = option("memory length (0: no memory)", 96)
    perm_size: int | None = option("block length of the factorisation order (default reuse_len)")
    partial_prediction: int = option("K: one token in K is predicted", 6)
    num_predict: int | None = option("targets per instance (default seq_len // K)", None)
    max_gram: int = option("longest span target, in tokens", 5)
    mask_alpha: int = option("a span of n tokens sits in n * alpha // beta tokens", 6)
    mask_beta: int = option("see mask_alpha", 1)
    bi_data: bool = option("half the rows read backwards (backward relative positions)", False)
    clamp_len: int = option("relative distances clamped to this (0: no clamp)", 0)
    dropout: float | None = option("dropout (default: the preset's)", None)
    eval_steps: int = option("held-out batches per evaluation", 16)
    batches: Batches = group(Batches, batch_size=16, micro_batch_size=16)
    optimization: Optimization = group(Optimization, learning_rate=4e-4, warmup_steps=0)
    run: Steps = group(Steps, max_steps=2_000)
    logging: Logging = group(Logging)
    device: str = device_option()
    arithmetic: Precision = group(Precision)
    threads: int = option("torch CPU threads per process (0: torch's default)", 0)

    def __post_init__(self):
        if not self.train_data:
            raise ConfigError("train_data is required (a shards directory from muppets prepare)")
        if self.model not in XLNET_PRESETS:
            raise ConfigError(f"unknown model {self.model!r} (valid: {', '.join(XLNET_PRESETS)})")
        rules = [
            ("objective", self.objective in OBJECTIVES, "one of " + ", ".join(OBJECTIVES)),
            ("mem_len", self.mem_len >= 0, ">= 0"),
            ("clamp_len", self.clamp_len >= 0, ">= 0"),
            ("eval_steps", self.eval_steps >= 1, ">= 1"),
            ("threads", self.threads >= 0, ">= 0"),
        ]
        check(self, rules)
        self.permutation_config()  # its own checks now (reuse_len, perm_size, num_predict)

    def permutation_config(self) -> PermutationConfig:
        return PermutationConfig(
            seq_len=self.seq_len,
            reuse_len=self.reuse_len,
            perm_size=self.perm_size or self.reuse_len,
            num_predict=self.num_predict,
            partial_prediction=self.partial_prediction,
            max_gram=self.max_gram,
            mask_alpha=self.mask_alpha,
            mask_beta=self.mask_beta,
        )

    def model_config(self, tokenizer):
        values = dict(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
        values |= dict(mem_len=self.mem_len, reuse_len=self.reuse_len, bi_data=self.bi_data)
        values |= dict(clamp_len=self.clamp_len)
        if self.dropout is not None:
            values["dropout"] = self.dropout
        return preset_config(self.model, **values)

    def train_config(self, accumulation: int, precision: str = "fp32") -> TrainConfig:
        return TrainConfig(
            **self.optimization.loop_options(),
            **self.run.loop_options(),
            **self.logging.loop_options(),
            gradient_accumulation_steps=accumulation,
            precision=precision,
        )


def end_of_document(tokenizer) -> int:
    """XLNet's <eod> when the vocabulary has it (xlnet style), else the separator."""
    found = tokenizer.backend.token_to_id("<eod>")
    return tokenizer.sep_id if found is None else int(found)


def stream_batches(config: XLNetPretrainConfig, data: str, tokenizer, rows: int, seed: int):
    corpus = ShardedCorpus(data)
    corpus.check_tokenizer(tokenizer.fingerprint())
    t = tokenizer
    return XLNetBatches(
        ShardStream(corpus, eos_id=end_of_document(t)),
        config.permutation_config(),
        rows,
        sep_id=t.sep_id,
        cls_id=t.cls_id,
        pad_id=t.pad_id,
        continuation=t.continuation_mask(),
        seed=seed,
        rank=dist.rank(),
        world_size=dist.world_size(),
        bi_data=config.bi_data,
    )


def pretrain_xlnet(config: XLNetPretrainConfig) -> dict:
    """Train, evaluate, write result.json; torch's thread count is restored afterwards."""
    with torch_threads(config.threads):
        return _pretrain_xlnet(config)


def _pretrain_xlnet(config: XLNetPretrainConfig) -> dict:
    info, config = start_run(config)
    rank, world = dist.rank(), dist.world_size()
    tokenizer = load_any_tokenizer(config.train_data)
    model_config = config.model_config(tokenizer)
    note = family_note("xlnet", tokenizer)  # e.g. WordPiece shards: [CLS] first, not <cls> last
    if note and rank == 0 and not config.run.resume:
        print(note, flush=True)
    accumulation = config.batches.accumulation(world)
    if config.bi_data and accumulation > 1:  # the model reads rows [forward; backward] per pass
        raise ConfigError(
            "bi_data needs micro_batch_size x processes = batch_size: each forward pass holds its "
            "rows and the same rows read backwards (the reference's per-core batch)"
        )
    source = stream_batches(
        config, config.train_data, tokenizer, config.batches.batch_size, config.run.seed
    )
    memory = SegmentMemory()
    batches = RowChunks(source, accumulation, memory, rows=len(source.rows))
    eval_fn = None
    if config.valid_data:
        rows = config.batches.micro_batch_size * world
        held = stream_batches(config, config.valid_data, tokenizer, rows, seed=0)
        count = min(config.eval_steps, len(held))

        def eval_fn():  # step 0 is a new stream: the held-out memories start empty
            return (held.batch(0, k) for k in range(count))

    torch.manual_seed(config.run.seed)  # the same initial weights on every rank
    model = XLNetPLMLoss(XLNetLMHeadModel(model_config), memory).to(info.device)
    extra = [Path(config.train_data) / name for name in TOKENIZER_FILES]
    result = train(
        model,
        PermutationLMObjective(),
        batches,
        config.train_config(accumulation, config.arithmetic.precision),
        config.out,
        config_dict=model_config.to_dict(),
        eval_batches_fn=eval_fn,
        resume=config.run.resume,
        resume_from=config.run.resume_from,
        extra_files=[p for p in extra if p.exists()],
    )
    if rank == 0:
        summary = {"config": flat_options(config), **result}
        (Path(config.out) / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        scores = result.get("eval") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()) if k != "loss")
        print(
            f"pretrain-xlnet: {result['step']} steps ({result['stopped']}), "
            f"{result['tokens_seen']:,} tokens, train loss {result['train_loss']:.4f}"
            + (f"; held-out {shown}" if shown else "")
            + f"; checkpoint {result['checkpoint']}"
        )
    dist.cleanup()
    return result
