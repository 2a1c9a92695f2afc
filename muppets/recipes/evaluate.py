"""`muppets evaluate` and `muppets predict`: a fine-tuned model scored on a task's dev (and test)
files, or its predictions for a file (GLUE submission tsv, SQuAD predictions.json, CoNLL
`word gold pred`).

A fine-tuned checkpoint directory is config.json (the encoder's), model.safetensors (encoder +
head), the tokenizer files, and task.json (tasks/setup.py); a --downstream one holds its task model
over the features of a frozen biLM or of word embeddings (training/downstream_model.py). The
scores printed are those of the predictions `predict` writes: one decoding (tasks/prediction.py,
downstream_model.py), with the SQuAD v2.0 threshold of task.json or --null-threshold.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from muppets.errors import ConfigError, InputError
from muppets.tasks.prediction import numbers, predict, scores_of, write_predictions
from muppets.tasks.registry import has_labels, split_path, task_spec
from muppets.tasks.setup import TASK_FILE, TaskSetup
from muppets.training.checkpoint import CONFIG
from muppets.training.device import pick_device
from muppets.training.downstream_model import is_downstream, load_downstream
from muppets.training.options import Precision, device_option, group, option
from muppets.training.precision import autocast
from muppets.training.pretrained import load_finetuned, resolve_finetuned

ERRORS = ("strict", "replace")


def _null_threshold_option():
    return option("SQuAD v2.0: answer '' when null - best span > this (default: task.json's)")


def _errors_option():
    return option("bytes that are not UTF-8: strict (stop at file:line) or replace", "strict")


@dataclass
class EvaluateConfig:
    model: str = option("fine-tuned model directory (or a multi-seed run: its best seed)", "")
    task: str | None = option("task (default: the model's)", None)
    data: str | None = option("data directory of the task (dev files, and test when labelled)")
    file: str | None = option("a labelled file to evaluate instead of the task's dev files", None)
    batch_size: int = option("examples per batch", 128)
    null_threshold: float | None = _null_threshold_option()
    errors: str = _errors_option()
    out: str | None = option("directory for evaluate.json (and the resolved config)", None)
    device: str = device_option()
    arithmetic: Precision = group(Precision)

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a fine-tuned model directory)")
        if not self.data and not self.file:
            raise ConfigError("give --data DIR or --file FILE")
        _check_errors(self.errors)


def _check_errors(errors: str) -> None:
    if errors not in ERRORS:
        raise ConfigError(f"errors must be strict or replace, got {errors!r}")


class Loaded(NamedTuple):
    """A fine-tuned model of either kind, as both commands use it."""

    setup: TaskSetup
    predict: Callable[[list, bool], tuple[object, dict]]  # (examples, labelled) -> preds, notes


def _load_for(config) -> Loaded:
    """The model (an encoder with its head, or a --downstream task model over its features), its
    task setup (another task of the same head and labels if asked) and how it predicts."""
    directory = resolve_finetuned_or_explain(config.model)
    device = pick_device(config.device)
    precision = config.arithmetic.start(device).precision  # printed once, before any loading
    if is_downstream(directory):
        downstream = load_downstream(directory, device, config.batch_size)
        setup = _adjusted(config, downstream.setup)

        def predict_words(examples: list, labelled: bool) -> tuple[object, dict]:
            return downstream.predict(examples, config.batch_size, precision), {}

        return Loaded(setup, predict_words)
    model, setup, tokenizer = load_finetuned(directory)
    model, setup = model.to(device), _adjusted(config, setup)

    def predict_tokens(examples: list, labelled: bool) -> tuple[object, dict]:
        features = setup.featurize(examples, tokenizer, labelled=labelled)
        here = setup.for_examples(examples)
        context = functools.partial(autocast, precision, device)
        pad_id, batch_size = tokenizer.pad_id, config.batch_size
        return predict(model, here, examples, features, pad_id, batch_size, context)

    return Loaded(setup, predict_tokens)


def _adjusted(config, setup: TaskSetup) -> TaskSetup:
    """--task (another task of the same head and labels) and --null-threshold applied."""
    if config.task and config.task != setup.task:
        other = task_spec(config.task)  # e.g. a model fine-tuned on mnli, evaluated on rte files
        if other.head != setup.head or (other.labels and list(other.labels) != setup.labels):
            raise ConfigError(
                f"task {config.task!r} does not fit a model fine-tuned for {setup.task!r} "
                f"(head {setup.head}, labels {', '.join(setup.labels) or 'none'})"
            )
        setup = dataclasses.replace(setup, task=config.task)
    if config.null_threshold is not None:
        if setup.squad_v2 is False:
            raise ConfigError("null_threshold applies to SQuAD v2.0 models only")
        threshold = float(config.null_threshold)  # a model of unknown version: v2.0 then
        setup = dataclasses.replace(setup, null_threshold=threshold, squad_v2=True)
    return setup


def resolve_finetuned_or_explain(path: str | Path) -> Path:
    """The fine-tuned directory; a --downstream run written before task.json was (its model
    cannot be rebuilt) is refused in one line that says where its scores and predictions are."""
    for candidate in (Path(path), *sorted(Path(path).glob("seed-*"))):
        config_file = candidate / CONFIG
        if not config_file.is_file() or (candidate / TASK_FILE).is_file():
            continue
        try:
            kind = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError):
            continue
        if kind == "downstream":
            raise ConfigError(
                f"{candidate} is a --downstream model without {TASK_FILE} (an older muppets "
                "wrote it): its dev and test scores are in metrics.json and its dev predictions "
                "beside it; fine-tune it again to evaluate or predict other files"
            )
    return resolve_finetuned(path)


def _splits(config, setup: TaskSetup) -> dict[str, Path]:
    """--file, else the task's dev files and its test file when that holds labels."""
    if config.file:
        return {"file": Path(config.file)}
    spec = setup.spec
    splits = {split: split_path(spec, config.data, split) for split in spec.dev_splits}
    if "test" in spec.files:
        try:
            splits["test"] = split_path(spec, config.data, "test")
        except InputError:
            pass
    return splits


def run_evaluate(config: EvaluateConfig) -> dict:
    loaded = _load_for(config)
    setup, results = loaded.setup, {}
    for split, path in _splits(config, setup).items():
        examples = setup.read(path, setup.spec.dev_splits[0], errors=config.errors)
        predictions, notes = loaded.predict(examples, True)
        scores = scores_of(setup.for_examples(examples), examples, predictions, notes)
        results[split] = scores
        shown = ", ".join(f"{k} {v:.4f}" for k, v in numbers(scores).items())
        print(f"{setup.task} {split} ({len(examples)} examples): {shown}")
    if config.out:
        path = Path(config.out) / "evaluate.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


@dataclass
class PredictConfig:
    model: str = option("fine-tuned model directory (or a multi-seed run: its best seed)", "")
    input: str = option("file to predict (labelled or not: told by its columns)", "")
    out: str = option("predictions file: GLUE tsv, SQuAD json or CoNLL `word gold pred`", "")
    task: str | None = option("task (default: the model's)", None)
    batch_size: int = option("examples per batch", 128)
    null_threshold: float | None = _null_threshold_option()
    errors: str = _errors_option()
    device: str = device_option()
    arithmetic: Precision = group(Precision)

    def __post_init__(self):
        if not (self.model and self.input and self.out):
            raise ConfigError("model, input and out are required")
        _check_errors(self.errors)


def run_predict(config: PredictConfig) -> Path:
    if Path(config.out).is_dir():  # before any work
        raise InputError("out: a directory is here; give a file name", config.out)
    loaded = _load_for(config)
    setup = loaded.setup
    labelled = has_labels(setup.spec, config.input)
    examples = setup.read(config.input, setup.spec.dev_splits[0], labelled, config.errors)
    predictions, notes = loaded.predict(examples, False)
    path = write_predictions(setup, examples, predictions, config.out)
    unpredicted = notes.get("words_unpredicted")
    extra = f" ({unpredicted} words without a sub-token: O)" if unpredicted else ""
    print(f"predict: {len(examples)} {setup.task} examples -> {path}{extra}")
    return path
