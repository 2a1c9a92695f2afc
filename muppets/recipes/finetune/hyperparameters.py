"""Fine-tuning hyperparameters: defaults that fit the encoder, and lists selected on dev.

Devlin et al. 2019 appendix A.3 fine-tune BERT-base with a rate in {5e-5, 3e-5, 2e-5} for 2 to 4
epochs and keep the best on dev. Small encoders need larger rates and more epochs: Turc et al. 2019
("Well-Read Students Learn Better", https://arxiv.org/abs/1908.08962, and the google-research/bert
README for their 24 small BERTs) select among {3e-4, 1e-4, 5e-5, 3e-5}; issue 12 measured a
bert-tiny (hidden 128) at BERT-base's 2e-5 for 3 epochs predicting the majority class (28.4%), and
at 1e-4 for 10 epochs reaching 67.8%. So, when the user gives none, the rate and the epochs come
from the encoder's hidden size (DEFAULT_RULE). A list (`--learning-rate 5e-5,1e-4,3e-4`) is a
grid: every candidate runs every seed, and the best median dev score wins (choose()).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics

from muppets.models.registry import PRESETS, preset_config
from muppets.training.options import listed
from muppets.training.pretrained import bert_config, resolve_checkpoint

# (largest hidden size, learning rate, epochs): the first row whose size fits is the default.
DEFAULT_RULE = ((256, 1e-4, 10), (512, 5e-5, 4), (math.inf, 2e-5, 3))
# --freeze trains only the head (a linear layer on fixed features): Adam's usual rate, as the
# quickstart's frozen rows use.
FROZEN_RATE = 1e-3
DOWNSTREAM_EPOCHS = 3  # --downstream: the epochs the frozen-feature task models had before


def default_values(hidden_size: int | None, freeze: bool) -> dict:
    """{learning_rate, epochs} for an encoder of this hidden size (None: --downstream, whose rate
    is --downstream-learning-rate)."""
    if hidden_size is None:
        return {"learning_rate": None, "epochs": DOWNSTREAM_EPOCHS}
    _, rate, epochs = next(row for row in DEFAULT_RULE if hidden_size <= row[0])
    return {"learning_rate": FROZEN_RATE if freeze else rate, "epochs": epochs}


def encoder_hidden_size(config) -> int | None:
    """The hidden size of the encoder `--model` names (a preset or a checkpoint's config.json)."""
    if config.downstream:
        return None
    if config.model in PRESETS:
        return preset_config(config.model).hidden_size
    return bert_config(resolve_checkpoint(config.model)).hidden_size


def candidates(config) -> list[dict]:
    """Every combination of the listed values, as {learning_rate, epochs, batch_size}; an option
    not given takes its default for the encoder's size (printed, so a run says what it used)."""
    given = {
        "learning_rate": listed(config.optimization.learning_rate, float, "learning_rate"),
        "epochs": listed(config.run.epochs, int, "epochs"),
        "batch_size": listed(config.batch_size, int, "batch_size"),
    }
    if not given["learning_rate"] or not given["epochs"]:
        hidden = encoder_hidden_size(config)
        defaults = default_values(hidden, config.freeze)
        chosen = {k: v for k, v in defaults.items() if not given[k] and v is not None}
        if chosen:
            shown = ", ".join(f"{k} {v:g}" for k, v in chosen.items())
            what = "--downstream" if hidden is None else f"hidden size {hidden}"
            print(f"defaults for {what}: {shown} (--learning-rate/--epochs to choose)")
        for key, value in defaults.items():
            given[key] = given[key] or [value]
    names = list(given)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*given.values())]


def resolved(config, candidate: dict):
    """The config with one candidate's values: what a seed runs with."""
    return dataclasses.replace(
        config,
        optimization=dataclasses.replace(
            config.optimization, learning_rate=candidate["learning_rate"]
        ),
        run=dataclasses.replace(config.run, epochs=candidate["epochs"]),
        batch_size=candidate["batch_size"],
    )


def candidate_name(candidate: dict, varying: list[str]) -> str:
    """A directory name from the values that vary across candidates: "lr-0.0001_bs-16"."""
    short = {"learning_rate": "lr", "epochs": "epochs", "batch_size": "bs"}
    return "_".join(f"{short[k]}-{candidate[k]:g}" for k in varying)


def varying_keys(grid: list[dict]) -> list[str]:
    return [k for k in grid[0] if len({c[k] for c in grid}) > 1]


def finite(score: float) -> float:
    return -math.inf if math.isnan(score) else score


def choose(medians: list[float]) -> int:
    """The candidate with the best median dev score (the first on a tie; NaN never wins)."""
    return max(range(len(medians)), key=lambda i: (finite(medians[i]), -i))


def spread(scores: dict) -> dict:
    """Median, min and max of the seeds' scores."""
    values = list(scores.values())
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
