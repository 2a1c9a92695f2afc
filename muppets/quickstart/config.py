"""The quickstart's options (QuickstartConfig, resolved and checked once), the recipe constants
that decide its results (budget shares, pretraining phases, fine-tuning rates), and where its data
is. The constants are the ones to edit when a probe finds better values; settings.json pins them
with the options, so a run resumed under other constants is refused."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from muppets.errors import ConfigError, InputError
from muppets.models.elmo import PRESETS as ELMO_PRESETS
from muppets.models.registry import PRESETS as BERT_PRESETS
from muppets.recipes.finetune.curves import parse_train_sizes
from muppets.training.budget import parse_duration
from muppets.training.options import listed
from muppets.training.precision import PRECISIONS

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

# Shares of the wall-clock budget. The stages before the lanes run first; then two lanes side
# by side, one process and one core each (torch on one thread in each), then the report. Each
# lane's shares with those before and after add up to 1. BERT's and ELECTRA's pretraining open the
# two lanes with the same share: they run side by side for the same wall-clock, one core each, as
# issue 14 compares them. The first lane goes on with BERT's rows, then ELMo and the word-level
# rows; the second (which needs no BERT pretraining) with ELECTRA's row and the scratch BERT. A
# third pretraining in 15 minutes on 2 cores costs the others: BERT's share is 0.30 (0.52 before
# ELECTRA), ELMo's 0.16 (0.38); --no-electra runs the layout before it (LANES_WITHOUT_ELECTRA).
# With --lanes 1 the lanes run one after the other at half their shares. The comparison rows
# share theirs as one pool (comparison.plan_comparison): what one row does not spend another may.
BEFORE_LANES = {"tokenizer": 0.01, "shards": 0.03}
LANES = (
    {
        "bert": 0.30,
        "fill-mask": 0.01,
        "bert-finetuned": 0.31,
        "bert-frozen": 0.02,
        "elmo": 0.16,
        "elmo-bilstm": 0.05,
        "random-bilstm": 0.05,
        "bag-of-embeddings": 0.02,
    },
    {"electra": 0.30, "electra-finetuned": 0.31, "bert-scratch": 0.31},
)
LANES_WITHOUT_ELECTRA = (
    {"bert": 0.52, "fill-mask": 0.01, "bert-finetuned": 0.37, "bert-frozen": 0.02},
    {
        "elmo": 0.38,
        "bert-scratch": 0.28,
        "elmo-bilstm": 0.12,
        "random-bilstm": 0.12,
        "bag-of-embeddings": 0.02,
    },
)
AFTER_LANES = {"report": 0.04}
CONLL_SHARE = 0.06  # --data-dir: taken from each SST-2 BERT row for its CoNLL-2003 row
CONLL_ROWS = {"bert-finetuned": "conll-bert-finetuned", "bert-scratch": "conll-bert-scratch"}


def lane_shares(with_conll: bool, electra: bool = True) -> tuple[dict[str, float], ...]:
    """LANES (or LANES_WITHOUT_ELECTRA), and with --data-dir each SST-2 BERT row giving
    CONLL_SHARE to its CoNLL-2003 row, placed right after it in the same lane."""
    lanes = []
    for lane in LANES if electra else LANES_WITHOUT_ELECTRA:
        shares = {}
        for name, share in lane.items():
            conll = CONLL_ROWS.get(name) if with_conll else None
            shares[name] = share - CONLL_SHARE if conll else share
            if conll:
                shares[conll] = CONLL_SHARE
        lanes.append(shares)
    return tuple(lanes)


def stage_shares(with_conll: bool, lanes: int = 2, electra: bool = True) -> dict[str, float]:
    """Every stage's share of the wall-clock budget, in the order they start: with one lane, each
    lane stage at half its share (the lanes one after the other)."""
    scale = 1.0 if lanes == 2 else 0.5
    shares = dict(BEFORE_LANES)
    for lane in lane_shares(with_conll, electra):
        shares.update({name: share * scale for name, share in lane.items()})
    return {**shares, **AFTER_LANES}


# BERT pretraining in phases (recipes/pretrain/phases.py): short instances first, when a small
# model learns most per second, then the length fine-tuning reads (Devlin et al. 2019 A.2).
BERT_PHASES = (
    {"share": 0.6, "max_seq_length": 32, "batch_size": 64},
    {"share": 0.4, "max_seq_length": 128, "batch_size": 32},
)
BERT_PRETRAINING = {
    "objective": "mlm+nsp",
    "learning_rate": 1e-3,
    "warmup_ratio": 0.06,
    "masked_lm_prob": 0.15,
}
# ELECTRA in the same phases, on the same shards and tokenizer, at BERT's rate and warmup; its
# own masking (15%, 85% of them [MASK], none random) and loss (generator MLM + 50 x replaced-token
# detection: tasks/electra_objective.py).
ELECTRA_PRETRAINING = {**BERT_PRETRAINING, "objective": "electra"}
# The BERT rows choose their rate on dev by the median over seeds (Devlin et al. A.3), so neither
# the pretrained nor the scratch model is held to a rate that suits only the other (Turc et al.
# 2019 select small BERTs' rates among 1e-4 and 3e-4 and lower). 3e-4 first: when the budget
# holds one rate only (plan.py), the first is run, and at 1,000 labels 3e-4 gave both bert-tiny
# rows 3-7 points more than 1e-4 (10 epochs, 3 seeds; bench/RESULTS.md).
BERT_LEARNING_RATES = "3e-4,1e-4"
# Evaluations (one an epoch) without a better dev score before a row's run stops. Small label
# budgets sit at the majority class for 2-5 epochs before they learn (measured at 1,000 labels),
# so finetune's default of 2 stopped most of them at epoch 3 with the majority's accuracy.
EARLY_STOPPING_PATIENCE = 4
# The label budgets (training sentences) and seeds of the comparison when none are given.
LABEL_BUDGETS, DATA_DIR_LABEL_BUDGETS, SEEDS = "1000,all", "1000,10000", "1,2,3"
CONLL_LABEL_BUDGETS = "1000,all"


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class QuickstartConfig:
    out: str = _help("output directory (rerun the same command to resume)", "runs/quickstart")
    data_dir: str | None = _help(
        "folder with wikipedia-en-extract/ and glue/SST-2/; none: the bundled sample", None
    )
    budget: str | None = _help(
        "wall-clock budget of the whole run, split over the stages; none: 15m, or 1h with "
        "--data-dir",
        None,
    )
    vocab_size: int = _help("WordPiece vocabulary size", 8000)
    lowercase: bool = _help("lowercase the text", True)
    bert_model: str = _help("BERT preset pretrained and fine-tuned", "bert-tiny")
    elmo_model: str = _help("ELMo preset pretrained", "elmo-small")
    electra: bool = _help(
        "pretrain an ELECTRA for BERT's wall-clock beside it and fine-tune it as the BERT rows "
        "(--no-electra: the two lanes without it, BERT's and ELMo's pretraining longer)",
        True,
    )
    electra_model: str = _help(
        "ELECTRA preset pretrained (its discriminator is fine-tuned)", "electra-tiny"
    )
    max_pretrain_steps: int = _help("upper bound on the steps of each pretraining", 1_000_000)
    max_epochs: int = _help(
        "fine-tuning epochs of every run (early stopping may end it sooner)", 10
    )
    label_budgets: str | None = _help(
        "SST-2 training sentences of the learning curve, comma-separated (or all); none: "
        f"{LABEL_BUDGETS}, or {DATA_DIR_LABEL_BUDGETS} with --data-dir",
        None,
    )
    seeds: str = _help("fine-tuning seeds of the claims (the BERT rows)", SEEDS)
    bert_learning_rates: str = _help(
        "the BERT rows' learning rates, comma-separated, chosen on dev by the median over seeds",
        BERT_LEARNING_RATES,
    )
    seed: int = _help("seed of pretraining and of the label subsets", 1)
    # One thread: these models are small, so a second intra-op thread gains little on an idle
    # 2-core machine (bert-tiny pretraining about 33k against 20k tokens/s) and loses up to 8x
    # when anything else runs (2.2k against 18.8k tokens/s beside two other jobs).
    threads: int = _help("torch CPU threads of each lane (0: torch's default, all cores)", 1)
    lanes: int = _help(
        "2: the second lane of stages (ELMo, the scratch and word-level rows) in a second "
        "process beside BERT's, one core each; 1: one after the other",
        2,
    )
    device: str = _help("cpu, cuda or auto", "auto")
    precision: str = _help(
        "auto (bf16 where the CPU has AMX or avx512_bf16 or the GPU has bf16, else fp32), fp32, "
        "bf16, or fp16 (GPU only): every stage's arithmetic, decided once at the start",
        "auto",
    )
    force_precision: bool = _help(
        "run --precision bf16 even where the hardware has no bf16 (emulated: ~100x slower)", False
    )

    def __post_init__(self):
        # The default budget is resolved into the config (settings.json and the saved config name
        # it) and parsed here, once: a bad duration is refused before any stage runs.
        self.budget = self.budget or ("1h" if self.data_dir else "15m")
        self._budget_seconds = parse_duration(self.budget)
        default = DATA_DIR_LABEL_BUDGETS if self.data_dir else LABEL_BUDGETS
        self.label_budgets = self.label_budgets or default
        try:
            parse_train_sizes(self.label_budgets)
        except ConfigError as error:  # the recipe's message names its own option
            raise ConfigError(error.message.replace("train_sizes", "label_budgets")) from None
        bert_presets = ", ".join(p for p in BERT_PRESETS if p.startswith("bert"))
        electras = [p for p, v in BERT_PRESETS.items() if v.get("model_type") == "electra"]
        rules = [
            ("vocab_size", self.vocab_size >= 100, ">= 100"),
            ("bert_model", self.bert_model in BERT_PRESETS, "one of " + bert_presets),
            ("elmo_model", self.elmo_model in ELMO_PRESETS, "one of " + ", ".join(ELMO_PRESETS)),
            ("electra_model", self.electra_model in electras, "one of " + ", ".join(electras)),
            ("max_pretrain_steps", self.max_pretrain_steps >= 1, ">= 1"),
            ("max_epochs", self.max_epochs >= 1, ">= 1"),
            ("threads", self.threads >= 0, ">= 0"),
            ("lanes", self.lanes in (1, 2), "1 or 2"),
            ("precision", self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        self.seed_list()
        listed(self.bert_learning_rates, float, "bert_learning_rates")

    def budget_list(self) -> list[int | None]:
        """The label budgets, ascending, None (all) last."""
        return parse_train_sizes(self.label_budgets)

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s.strip()]
        except ValueError:
            seeds = []
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(
                f"seeds must be distinct comma-separated integers, got {self.seeds!r}"
            )
        return seeds

    @property
    def budget_seconds(self) -> float:
        """The whole run's budget in seconds (not a field: settings.json pins `budget`)."""
        return self._budget_seconds


@dataclass(frozen=True)
class Inputs:
    train_text: list[str]  # files or globs
    valid_text: list[str]
    sst2: Path  # holding train.tsv and dev.tsv
    conll: Path | None = None  # holding train.txt, valid.txt, test.txt (--data-dir only)


def find_inputs(config: QuickstartConfig) -> Inputs:
    """The bundled sample, or the files under --data-dir; a missing one is an InputError."""
    if config.data_dir is None:
        train, valid, sst2 = SAMPLES / "wiki.train.txt", SAMPLES / "wiki.valid.txt", SAMPLES
    else:
        wiki = Path(config.data_dir) / "wikipedia-en-extract"
        train, valid = wiki / "wiki.train.0*.txt", wiki / "wiki.valid.txt"
        sst2 = Path(config.data_dir) / "glue"
    conll = Path(config.data_dir) / "conll2003" if config.data_dir else None
    inputs = Inputs([str(train)], [str(valid)], sst2 / "SST-2", conll)
    for pattern in inputs.train_text + inputs.valid_text:
        if not glob.glob(pattern):
            raise InputError("no such text file", pattern)
    for split in ("train.tsv", "dev.tsv"):
        if not (inputs.sst2 / split).is_file():
            raise InputError("no SST-2 file here", inputs.sst2 / split)
    for split in ("train.txt", "valid.txt", "test.txt") if conll else ():
        if not (conll / split).is_file():
            raise InputError("no CoNLL-2003 file here", conll / split)
    return inputs
