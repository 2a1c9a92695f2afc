"""The quickstart's options (QuickstartConfig, resolved and checked once) and where its data is."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from muppets.errors import ConfigError, InputError
from muppets.models.elmo import PRESETS as ELMO_PRESETS
from muppets.models.registry import PRESETS as BERT_PRESETS
from muppets.training.budget import parse_duration

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class QuickstartConfig:
    out: str = _help("output directory (rerun the same command to resume)", "runs/quickstart")
    data_dir: str | None = _help(
        "folder with wikipedia-en-extract/ and glue/SST-2/; none: the bundled sample", None
    )
    budget: str | None = _help(
        "wall-clock budget of the whole run, split over the stages; none: 12m, or 1h with "
        "--data-dir",
        None,
    )
    vocab_size: int = _help("WordPiece vocabulary size", 8000)
    lowercase: bool = _help("lowercase the text", True)
    bert_model: str = _help("BERT preset pretrained and fine-tuned", "bert-tiny")
    elmo_model: str = _help("ELMo preset pretrained", "elmo-small")
    max_pretrain_steps: int = _help("upper bound on the steps of each pretraining", 1_000_000)
    max_epochs: int = _help("upper bound on fine-tuning epochs", 10)
    max_train_examples: int = _help("fine-tune on at most this many (0: what the budget allows)", 0)
    seed: int = _help("seed of pretraining and fine-tuning", 1)
    # One thread: these models are small, so a second intra-op thread gains little on an idle
    # 2-core machine (bert-tiny pretraining about 33k against 20k tokens/s) and loses up to 8x
    # when anything else runs (2.2k against 18.8k tokens/s beside two other jobs).
    threads: int = _help("torch CPU threads (0: torch's default, all cores)", 1)
    device: str = _help("cpu, cuda or auto", "auto")

    def __post_init__(self):
        # The default budget is resolved into the config (settings.json and the saved config name
        # it) and parsed here, once: a bad duration is refused before any stage runs.
        self.budget = self.budget or ("1h" if self.data_dir else "12m")
        self._budget_seconds = parse_duration(self.budget)
        bert_presets = ", ".join(p for p in BERT_PRESETS if p.startswith("bert"))
        rules = [
            ("vocab_size", self.vocab_size >= 100, ">= 100"),
            ("bert_model", self.bert_model in BERT_PRESETS, "one of " + bert_presets),
            ("elmo_model", self.elmo_model in ELMO_PRESETS, "one of " + ", ".join(ELMO_PRESETS)),
            ("max_pretrain_steps", self.max_pretrain_steps >= 1, ">= 1"),
            ("max_epochs", self.max_epochs >= 1, ">= 1"),
            ("max_train_examples", self.max_train_examples >= 0, ">= 0"),
            ("threads", self.threads >= 0, ">= 0"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    @property
    def budget_seconds(self) -> float:
        """The whole run's budget in seconds (not a field: settings.json pins `budget`)."""
        return self._budget_seconds


@dataclass(frozen=True)
class Inputs:
    train_text: list[str]  # files or globs
    valid_text: list[str]
    sst2: Path  # holding train.tsv and dev.tsv


def find_inputs(config: QuickstartConfig) -> Inputs:
    """The bundled sample, or the files under --data-dir; a missing one is an InputError."""
    if config.data_dir is None:
        train, valid, sst2 = SAMPLES / "wiki.train.txt", SAMPLES / "wiki.valid.txt", SAMPLES
    else:
        wiki = Path(config.data_dir) / "wikipedia-en-extract"
        train, valid = wiki / "wiki.train.0*.txt", wiki / "wiki.valid.txt"
        sst2 = Path(config.data_dir) / "glue"
    inputs = Inputs([str(train)], [str(valid)], sst2 / "SST-2")
    for pattern in inputs.train_text + inputs.valid_text:
        if not glob.glob(pattern):
            raise InputError("no such text file", pattern)
    for split in ("train.tsv", "dev.tsv"):
        if not (inputs.sst2 / split).is_file():
            raise InputError("no SST-2 file here", inputs.sst2 / split)
    return inputs
