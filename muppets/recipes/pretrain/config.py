"""The options of a pretraining run, and the per-phase configs a run with phases expands into.

The shards directory carries its tokenizer (prepare saves it there), the model preset is sized to
that vocabulary, and the objective picks how instances are made (mlm+nsp: BERT pairs; mlm+sop:
ALBERT sentence order; mlm: RoBERTa full sentences with dynamic masking; mlm+sbo: SpanBERT's single
segments with span masking).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from muppets.data.pretraining import PretrainingDataConfig
from muppets.errors import ConfigError
from muppets.models.registry import PRESETS
from muppets.recipes.pretrain.phases import Phase, as_phase, check_lengths, overrides
from muppets.training.loop import TrainConfig
from muppets.training.options import (
    Batches,
    Logging,
    Optimization,
    Precision,
    Steps,
    check,
    device_option,
    flat_options,
    from_options,
    group,
    option,
)

# ELECTRA: full sentences packed to the length (as its build_pretraining_dataset.py packs
# segments); the objective undoes the pipeline's masks and masks again by ELECTRA's rule.
INSTANCES_FOR = {
    "mlm+nsp": "nsp",
    "mlm+sop": "sop",
    "mlm": "full_sentences",
    "electra": "full_sentences",
    "mlm+sbo": "full_sentences",  # SpanBERT: single contiguous segments, no NSP (section 3.3)
}


@dataclass
class PretrainConfig:
    train_data: str = option("shards directory from `muppets prepare`", "")
    valid_data: str | None = option("held-out shards directory for evaluation", None)
    out: str = option("run directory: checkpoints, metrics.jsonl, loss.png", "runs/pretrain")
    model: str = option("model preset (bert-tiny, bert-mini, ..., roberta-base)", "bert-mini")
    objective: str = option(
        "mlm+nsp (BERT), mlm+sop (ALBERT pairs), mlm (RoBERTa), mlm+sbo (SpanBERT), "
        "electra (electra-* models)",
        "mlm+nsp",
    )
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
    masking: str | None = option(
        "token, whole_word, span (SpanBERT), ngram (ALBERT), phrase or entity (ERNIE units "
        "from `prepare`) (default: ngram for albert-*, span for mlm+sbo, else token)",
        None,
    )
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
    arithmetic: Precision = group(Precision)
    phases: list[Phase] = field(
        default_factory=list,
        metadata={"help": "[[phases]] tables, run one after the other (phases.py)"},
    )

    def __post_init__(self):
        if not self.train_data:
            raise ConfigError("train_data is required (a directory from `muppets prepare`)")
        # batch_size 0 is a multiple of any micro-batch: named here, not as 0 accumulation steps
        check(self.batches, [("batch_size", self.batches.batch_size >= 1, ">= 1")])
        if self.objective not in INSTANCES_FOR:
            valid = ", ".join(INSTANCES_FOR)
            raise ConfigError(f"objective must be one of {valid}, got {self.objective!r}")
        electra = PRESETS.get(self.model, {}).get("model_type") == "electra"
        if self.model in PRESETS and electra != (self.objective == "electra"):
            raise ConfigError(
                f"model {self.model!r} with objective {self.objective!r}: ELECTRA models "
                "(electra-*) train with objective electra, and only they do"
            )
        if self.masking is None:  # google-research/albert masks n-grams (--ngram 3) by default
            albert = PRESETS.get(self.model, {}).get("model_type") == "albert"
            self.masking = "ngram" if albert else "span" if self.objective == "mlm+sbo" else "token"
        self.phases = [as_phase(item, k) for k, item in enumerate(self.phases, 1)]
        if self.phases:
            check_lengths(self.phases, self.run.time_budget)
            self.phase_configs()  # a bad value in a phase names itself now, before any training

    def phase_configs(self) -> list[PretrainConfig]:
        """One single-phase config per phase, its run directory `<out>/phase-<k>`; the first
        starts from `init_from`, each later one from the phase before it."""
        run = {k: v for k, v in flat_options(self).items() if k != "phases"}
        budget = self.run.time_budget_seconds()
        configs = []
        for k, phase in enumerate(self.phases, 1):
            values = {**run, **overrides(phase, run, budget)}
            values["out"] = str(Path(self.out) / f"phase-{k}")
            if k > 1:
                values["init_from"] = str(Path(self.out) / f"phase-{k - 1}")
            try:
                configs.append(from_options(type(self), **values))
            except ConfigError as error:
                raise ConfigError(f"phases[{k}]: {error.message}") from None
        return configs

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

    def train_config(self, accumulation: int, precision: str = "fp32") -> TrainConfig:
        """The loop's config; `precision`: the resolved one (arithmetic.start)."""
        return TrainConfig(
            **self.optimization.loop_options(),
            **self.run.loop_options(),
            **self.logging.loop_options(),
            gradient_accumulation_steps=accumulation,
            precision=precision,
        )
