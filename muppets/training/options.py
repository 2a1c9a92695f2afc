"""The options recipes share, declared once: composed config groups, and the helpers that declare
and check an option.

A recipe config is a dataclass that holds groups as fields (`optimization: Optimization`, ...),
each with the recipe's own defaults (`group(Optimization, learning_rate=1e-3)`), and adds only
its own fields. On the command line and in TOML files the options stay flat (`--learning-rate`,
`learning_rate = 1e-3`): `flat_fields` names every option with the group that holds it, and
`from_options` builds a config from flat names, as the CLI does. A group turns into the loop's
TrainConfig fields through its `loop_options()`.

An option marked `listable=True` takes one number or several: a recipe that selects candidates on
dev (fine-tuning) lists them (`--learning-rate 5e-5,1e-4`, `learning_rate = [5e-5, 1e-4]`), and
None leaves the value to the recipe. The group checks every value; `loop_options()` takes one.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from muppets.errors import ConfigError
from muppets.training.budget import parse_duration
from muppets.training.optim import SCHEDULES
from muppets.training.precision import PRECISIONS, describe, resolve_precision


def option(help: str, default: Any = None, **metadata) -> Any:
    """A config field with its help text (and, e.g., positional=True for a positional flag)."""
    return field(default=default, metadata={"help": help, **metadata})


def group(cls: type, **defaults) -> Any:
    """A group field of a recipe config, with the recipe's own defaults for some of its options."""
    return field(default_factory=lambda: cls(**defaults))


def device_option() -> Any:
    return option("cpu, cuda or auto", "auto")


@dataclass
class Precision:
    """The arithmetic a run computes in (training/precision.py): fp32, or bf16/fp16 autocast over
    fp32 master weights. "auto" asks the hardware: bf16 where it computes it, else fp32."""

    precision: str = option(
        "auto (bf16 where the CPU has AMX or avx512_bf16 or the GPU has bf16, else fp32), fp32, "
        "bf16, or fp16 (GPU only)",
        "auto",
    )
    force_precision: bool = option(
        "run --precision bf16 even where the hardware has no bf16 (emulated: ~100x slower)", False
    )

    def __post_init__(self):
        rules = [("precision", self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS))]
        check(self, rules)

    def resolve(self, device, recorded: str | None = None) -> str:
        """The precision to run in on `device` (a one-line ConfigError if it cannot pay there).
        `recorded`: a resumed run's own, which "auto" keeps, unless this machine cannot run it
        (then "auto" decides anew, and the resume line says so)."""
        if self.precision == "auto" and recorded is not None:
            try:
                return resolve_precision(recorded, device, self.force_precision)
            except ConfigError:
                pass
        return resolve_precision(self.precision, device, self.force_precision)

    def start(self, device, recorded: str | None = None, show: bool = True) -> Precision:
        """Resolved once at a run's start and its line printed (stdout, as the run's other
        notes: stderr holds only the one error line of a failing command); the group with the
        resolved value, which later calls take as it is."""
        chosen = self.resolve(device, recorded)
        if show:
            print(describe(chosen, device), flush=True)
        return dataclasses.replace(self, precision=chosen)


def listed(value: Any, kind: type, name: str) -> list:
    """The values of a listable option: None -> [], one number -> [it], a list -> the list, text
    from the command line ("5e-5,1e-4") -> its numbers; each value > 0 and distinct."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    items = items if isinstance(items, list | tuple) else [items]
    try:
        if any(isinstance(v, bool) or (kind is int and isinstance(v, float)) for v in items):
            raise ValueError
        values = [kind(v.strip() if isinstance(v, str) else v) for v in items]
    except (TypeError, ValueError):
        message = f"{name} must be a {kind.__name__} or a comma-separated list, got {value!r}"
        raise ConfigError(message) from None
    if len(values) == 1 and not values[0] > 0:
        raise ConfigError(f"{name} must be > 0, got {values[0]!r}")
    if not values or any(not v > 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{name} must be distinct values > 0, got {value!r}")
    return values


def one_or_list(value: Any, kind: type, name: str) -> Any:
    """A listable option as it is kept: None, one number, or a list of two or more."""
    values = listed(value, kind, name)
    return None if not values else values[0] if len(values) == 1 else values


def single(value: Any, name: str) -> Any:
    """The one value a run trains with: a list or None left to the recipe is an error here."""
    if value is None or isinstance(value, list):
        raise ConfigError(f"{name}: one value is needed here, got {value!r}")
    return value


def check(config: Any, rules: list[tuple[str, bool, str]]) -> None:
    """Raise a ConfigError naming the first field whose rule fails: (field, ok, rule)."""
    for name, ok, rule in rules:
        if not ok:
            raise ConfigError(f"{name} must be {rule}, got {getattr(config, name)!r}")


@dataclass
class Optimization:
    """AdamW (no decay on biases and norms) and the learning-rate schedule (training/optim.py)."""

    learning_rate: float | list[float] | None = option(
        "peak learning rate (finetune: a comma-separated list is selected on dev)",
        1e-4,
        listable=True,
    )
    schedule: str = option("linear, cosine or constant after warmup", "linear")
    warmup_steps: int = option("warmup steps", 10_000)
    warmup_ratio: float | None = option("warmup as a share of all steps (overrides steps)", None)
    weight_decay: float = option("AdamW weight decay (not on biases and norms)", 0.01)
    adam_epsilon: float = option("AdamW epsilon (BERT's 1e-6)", 1e-6)
    max_grad_norm: float = option("gradient clipping norm", 1.0)
    layer_lr_decay: float = option(
        "layer-wise learning-rate decay: layer i of L gets rate x decay^(L+1-i), the embeddings "
        "x decay^(L+2), the head the full rate (ELECTRA fine-tunes with 0.8); 1: off",
        1.0,
    )

    def __post_init__(self):
        # each listed rate > 0 (listed() raises); None: the recipe's choice
        self.learning_rate = one_or_list(self.learning_rate, float, "learning_rate")
        ratio = self.warmup_ratio
        rules = [
            ("schedule", self.schedule in SCHEDULES, "one of " + ", ".join(SCHEDULES)),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("warmup_ratio", ratio is None or 0 <= ratio < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("adam_epsilon", self.adam_epsilon > 0, "> 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("layer_lr_decay", 0 < self.layer_lr_decay <= 1, "in (0, 1]"),
        ]
        check(self, rules)

    def loop_options(self) -> dict:
        options = dataclasses.asdict(self)  # TrainConfig's names
        return {**options, "learning_rate": single(self.learning_rate, "learning_rate")}


@dataclass
class Logging:
    """How often the loop writes a train record (metrics.jsonl, the progress line)."""

    log_every: int = option("steps between log records", 50)

    def __post_init__(self):
        check(self, [("log_every", self.log_every >= 1, ">= 1")])

    def loop_options(self) -> dict:
        return {"log_every": self.log_every}


@dataclass
class Steps:
    """A run counted in optimizer steps (pretraining): its length, how often it evaluates and
    saves, its seed, and whether it continues from its last checkpoint."""

    max_steps: int = option("optimizer steps (an upper bound with --time-budget)", 10_000)
    time_budget: str | None = option("wall-clock budget (30m, 1h): sets the schedule length", None)
    eval_every: int = option("steps between evaluations (0: at the end)", 500)
    save_every: int = option("steps between checkpoints (0: at the end)", 500)
    seed: int = option("seed of the weights, the data order, masking and dropout", 0)
    resume: bool = option("continue the run in --out from its last checkpoint", False)
    resume_from: str | None = option(
        "continue the run in --out from this checkpoint of it (OUT/checkpoints/step-N); the "
        "newer ones move to OUT/checkpoints-after-N/",
        None,
    )

    def __post_init__(self):
        rules = [
            ("max_steps", self.max_steps >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("save_every", self.save_every >= 0, ">= 0"),
        ]
        check(self, rules)
        self.time_budget_seconds()  # a bad duration names itself now
        self.resume = self.resume or bool(self.resume_from)  # a named checkpoint is a resume

    def time_budget_seconds(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)

    def loop_options(self) -> dict:
        return {
            "max_steps": self.max_steps,
            "time_budget_seconds": self.time_budget_seconds(),
            "eval_every": self.eval_every,
            "save_every": self.save_every,
            "seed": self.seed,
        }


@dataclass
class Batches:
    """Examples per optimizer step, over all processes, reached by gradient accumulation."""

    batch_size: int = option("examples per optimizer step, over all processes", 128)
    micro_batch_size: int = option("examples per forward pass (gradient accumulation)", 32)

    def __post_init__(self):
        multiple = self.batch_size % max(self.micro_batch_size, 1) == 0
        rules = [
            ("micro_batch_size", self.micro_batch_size >= 1, ">= 1"),
            ("batch_size", multiple, "a multiple of micro_batch_size"),
        ]
        check(self, rules)

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each of `world_size` processes."""
        per_step = self.micro_batch_size * world_size
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x {world_size} processes"
            )
        return self.batch_size // per_step


@dataclass
class Epochs:
    """A run counted in passes over a task's training set (fine-tuning), evaluated on dev a few
    times per epoch, and stopped early when dev stops improving."""

    epochs: int | list[int] | None = option(
        "passes over the training data (finetune: a comma-separated list is selected on dev)",
        3,
        listable=True,
    )
    evals_per_epoch: int = option("dev evaluations per epoch", 1)
    early_stopping_patience: int = option("stop after N evaluations without a better dev score", 2)

    def __post_init__(self):
        self.epochs = one_or_list(self.epochs, int, "epochs")  # each >= 1; None: the recipe's
        rules = [
            ("evals_per_epoch", self.evals_per_epoch >= 1, ">= 1"),
            ("early_stopping_patience", self.early_stopping_patience >= 0, ">= 0"),
        ]
        check(self, rules)

    def loop_options(self, steps_per_epoch: int) -> dict:
        return {
            "max_steps": single(self.epochs, "epochs") * steps_per_epoch,
            "eval_every": max(1, steps_per_epoch // self.evals_per_epoch),
            "early_stopping_patience": self.early_stopping_patience,
        }


# ---------------------------------------------------------------- flat names


def group_fields(cls: type) -> dict[str, type]:
    """{field name: group class} of a recipe config's fields that are groups."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[f.name])
    }


def flat_fields(cls: type) -> dict[str, tuple[str | None, type, dataclasses.Field, Any]]:
    """Every option of a recipe config by its flat name: (group field or None, the class that
    declares it, its Field, the recipe's default). A name declared twice is a TypeError."""
    groups = group_fields(cls)
    found: dict[str, tuple[str | None, type, dataclasses.Field, Any]] = {}
    for f in dataclasses.fields(cls):
        if f.name in groups:
            defaults: Any = f.default_factory()  # type: ignore[misc]
            entries = [
                (f.name, groups[f.name], g, getattr(defaults, g.name))
                for g in dataclasses.fields(groups[f.name])
            ]
        else:
            default = None if f.default is dataclasses.MISSING else f.default
            entries = [(None, cls, f, default)]
        for entry in entries:
            if entry[2].name in found:
                raise TypeError(f"{cls.__name__}: option {entry[2].name!r} is declared twice")
            found[entry[2].name] = entry
    return found


def from_options(cls: type, **values) -> Any:
    """A recipe config from flat option names (`learning_rate=...`), as the CLI and TOML files
    spell them; a group's options not given keep the recipe's defaults."""
    options = flat_fields(cls)
    top: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if name not in options:
            valid = ", ".join(sorted(options))
            raise ConfigError(f"unknown option '{name}' (valid: {valid})")
        owner = options[name][0]
        if owner is None:
            top[name] = value
        else:
            grouped.setdefault(owner, {})[name] = value
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for owner, given in grouped.items():
        top[owner] = dataclasses.replace(fields[owner].default_factory(), **given)  # type: ignore[misc]
    return cls(**top)


def flat_options(config: Any) -> dict[str, Any]:
    """A recipe config as {flat option name: value}, every default included."""
    values: dict[str, Any] = {}
    for name, value in dataclasses.asdict(config).items():
        if name in group_fields(type(config)):
            values.update(value)
        else:
            values[name] = value
    return values


def default_option(cls: type, name: str) -> Any:
    """The recipe's default of one (flat) option."""
    return flat_fields(cls)[name][3]
