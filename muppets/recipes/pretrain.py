"""`muppets pretrain`: tokenizer + shards + model + objective -> train().

The recipe only composes: the shards directory carries its tokenizer (prepare saves it there),
the model preset is sized to that vocabulary, the objective picks how instances are made
(mlm+nsp: BERT pairs; mlm+sop: ALBERT sentence order; mlm: RoBERTa full sentences with dynamic
masking), and the loop does the rest. Works unchanged under `torchrun --nproc_per_node N`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from muppets.data.pretraining import (
    PretrainingBatches,
    PretrainingDataConfig,
    SpecialIds,
    evaluation_batches,
)
from muppets.data.shards import ShardedCorpus
from muppets.errors import ConfigError, InputError
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tasks.objectives import objective_for
from muppets.tokenization.wordpiece import load_tokenizer
from muppets.training import distributed as dist
from muppets.training.checkpoint import check_config, load_weights
from muppets.training.loop import TrainConfig, train
from muppets.training.options import (
    Batches,
    Logging,
    Optimization,
    Steps,
    device_option,
    flat_options,
    group,
    option,
)
from muppets.training.pretrained import TOKENIZER_FILES, resolve_checkpoint

INSTANCES_FOR = {"mlm+nsp": "nsp", "mlm+sop": "sop", "mlm": "full_sentences"}


@dataclass
class PretrainConfig:
    train_data: str = option("shards directory from `muppets prepare`", "")
    valid_data: str | None = option("held-out shards directory for evaluation", None)
    out: str = option("run directory: checkpoints, metrics.jsonl, loss.png", "runs/pretrain")
    model: str = option("model preset (bert-tiny, bert-mini, ..., roberta-base)", "bert-mini")
    objective: str = option("mlm+nsp (BERT), mlm+sop (ALBERT pairs), mlm (RoBERTa)", "mlm+nsp")
    pre_layer_norm: bool = option("pre-LN Transformer layers instead of the paper's post-LN", False)
    dropout: float | None = option("hidden and attention dropout (default: the preset's)", None)
    # data
    max_seq_length: int = option("tokens per instance, [CLS]/[SEP] included", 128)
    short_seq_prob: float = option("share of shorter pairs (BERT)", 0.1)
    masked_lm_prob: float = option("share of tokens predicted", 0.15)
    max_predictions_per_seq: int = option("cap on predicted tokens per instance", 20)
    eval_masked_lm_prob: float | None = option(
        "share of held-out tokens predicted (default: masked_lm_prob)", None
    )
    masking: str = option("token, whole_word or span (SpanBERT)", "token")
    dynamic_masking: bool | None = option("new masks every epoch (default: only for mlm)", None)
    dupe_factor: int = option("static masking: epochs before masks repeat", 10)
    partitions: int = option("data partitions; the number of processes must divide it", 8)
    eval_instances: int = option("held-out instances per evaluation", 1024)
    batches: Batches = group(Batches, batch_size=128, micro_batch_size=32)
    # optimisation, the run, logging
    optimization: Optimization = group(Optimization, learning_rate=1e-4, warmup_steps=10_000)
    run: Steps = group(Steps, max_steps=10_000)
    logging: Logging = group(Logging)
    init_from: str | None = option(
        "start from these weights with a fresh optimizer and schedule (BERT's second phase)", None
    )
    device: str = device_option()

    def __post_init__(self):
        if not self.train_data:
            raise ConfigError("train_data is required (a directory from `muppets prepare`)")
        if self.objective not in INSTANCES_FOR:
            valid = ", ".join(INSTANCES_FOR)
            raise ConfigError(f"objective must be one of {valid}, got {self.objective!r}")

    def data_config(self) -> PretrainingDataConfig:
        dynamic = self.dynamic_masking
        return PretrainingDataConfig(
            kind=INSTANCES_FOR[self.objective],
            masking=self.masking,
            dynamic_masking=self.objective == "mlm" if dynamic is None else dynamic,
            max_seq_length=self.max_seq_length,
            short_seq_prob=self.short_seq_prob,
            masked_lm_prob=self.masked_lm_prob,
            max_predictions_per_seq=self.max_predictions_per_seq,
            dupe_factor=self.dupe_factor,
            batch_size=self.batches.batch_size,
            micro_batch_size=self.batches.micro_batch_size,
            partitions=self.partitions,
            seed=self.run.seed,
        )

    def eval_data_config(self) -> PretrainingDataConfig:
        """The held-out instances' config: training's, at eval_masked_lm_prob when it is set.

        A run trained at a higher masking rate (Wettig et al. 2022) is still judged at the same
        rate as any other, with the cap scaled as BERT's (0.15 of 128 tokens -> 20).
        """
        data = self.data_config()
        if self.eval_masked_lm_prob is None:
            return data
        cap = math.ceil(self.eval_masked_lm_prob * self.max_seq_length)
        return dataclasses.replace(
            data, masked_lm_prob=self.eval_masked_lm_prob, max_predictions_per_seq=cap
        )

    def train_config(self, accumulation: int) -> TrainConfig:
        return TrainConfig(
            **self.optimization.loop_options(),
            **self.run.loop_options(),
            **self.logging.loop_options(),
            gradient_accumulation_steps=accumulation,
        )


def held_out_batches(config: PretrainConfig, tokenizer, rank: int = 0, world_size: int = 1):
    """The fixed, masked held-out micro-batches a run evaluates on (rank r keeps its share): the
    same for the run, its unigram baseline and any later look at it (bench/)."""
    valid_corpus = ShardedCorpus(config.valid_data)
    valid_corpus.check_tokenizer(tokenizer.fingerprint())
    t = tokenizer
    return evaluation_batches(
        valid_corpus,
        config.eval_data_config(),
        SpecialIds(t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.vocab_size),
        continuation=t.continuation_mask() if config.masking != "token" else None,
        max_instances=config.eval_instances,
        rank=rank,
        world_size=world_size,
    )


def pretrain(config: PretrainConfig) -> dict:
    info = dist.init_distributed(None if config.device == "auto" else config.device)
    rank, world = dist.rank(), dist.world_size()
    tokenizer = load_tokenizer(config.train_data)
    train_corpus = ShardedCorpus(config.train_data)
    train_corpus.check_tokenizer(tokenizer.fingerprint())
    t = tokenizer
    ids = SpecialIds(t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.vocab_size)
    data = config.data_config()
    continuation = tokenizer.continuation_mask() if data.masking != "token" else None
    batches = PretrainingBatches(
        train_corpus, data, ids, continuation=continuation, rank=rank, world_size=world
    )
    eval_fn = None
    if config.valid_data:
        held_out = held_out_batches(config, tokenizer, rank=rank, world_size=world)

        def eval_fn():
            return held_out

    dropout = {}
    if config.dropout is not None:
        dropout = {"hidden_dropout_prob": config.dropout}
        dropout["attention_probs_dropout_prob"] = config.dropout
    model_config = preset_config(
        config.model,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_id,
        pre_layer_norm=config.pre_layer_norm,
        **dropout,
    )
    if model_config.max_sequence_length < config.max_seq_length:
        raise ConfigError(
            f"max_seq_length {config.max_seq_length} is longer than model {config.model!r} "
            f"takes ({model_config.max_sequence_length} positions)"
        )
    torch.manual_seed(config.run.seed)  # the same initial weights on every rank
    model = build_pretraining_model(model_config, with_pair_head=config.objective != "mlm")
    if config.init_from and not config.run.resume:
        _load_initial_weights(model, model_config, tokenizer, config.init_from)
    model.to(info.device)
    extra = [Path(config.train_data) / name for name in TOKENIZER_FILES]
    result = train(
        model,
        objective_for(config.objective),
        batches,
        config.train_config(data.accumulation_steps(world)),
        config.out,
        config_dict=model_config.to_dict(),
        eval_batches_fn=eval_fn,
        resume=config.run.resume,
        extra_files=[p for p in extra if p.exists()],
    )
    if rank == 0:
        summary = {"config": flat_options(config), **result}
        (Path(config.out) / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(_summary_line(result))
    dist.cleanup()
    return result


_MAY_DIFFER = {"hidden_dropout_prob", "attention_probs_dropout_prob"}


def _load_initial_weights(model, model_config, tokenizer, init_from: str) -> None:
    """The weights of a finished run or checkpoint, for a run that goes on from it under other data
    settings (Devlin et al. A.2: 90% of the steps at 128 tokens, then 512 from those weights)."""
    directory = resolve_checkpoint(init_from)
    if load_tokenizer(directory).fingerprint() != tokenizer.fingerprint():
        raise InputError("init_from: the checkpoint has another vocabulary", directory)
    check_config(directory, model_config.to_dict(), may_differ=_MAY_DIFFER)
    load_weights(model, directory)


def _summary_line(result: dict) -> str:
    scores = result.get("eval") or {}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()) if k != "loss")
    return (
        f"pretrain: {result['step']} steps ({result['stopped']}), "
        f"{result['tokens_seen']:,} tokens, train loss {result['train_loss']:.4f}"
        + (f"; held-out {shown}" if shown else "")
        + f"; checkpoint {result['checkpoint']}"
    )
