"""`muppets evaluate` and `muppets predict`: a fine-tuned model scored on a task's dev files, or
its predictions for a file (GLUE submission tsv, SQuAD predictions.json, CoNLL `word gold pred`).

A fine-tuned checkpoint directory is config.json (the encoder's), model.safetensors (encoder +
head), the tokenizer files, and task.json (tasks/setup.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from muppets.errors import ConfigError
from muppets.tasks.prediction import evaluate_examples, numbers, predict, write_predictions
from muppets.tasks.registry import split_path, task_spec
from muppets.tasks.setup import TaskSetup
from muppets.tokenization.wordpiece import WordPieceTokenizer
from muppets.training.device import pick_device
from muppets.training.options import device_option, option
from muppets.training.pretrained import load_finetuned


@dataclass
class EvaluateConfig:
    model: str = option("fine-tuned model directory (or a multi-seed run: its best seed)", "")
    task: str | None = option("task (default: the model's)", None)
    data: str | None = option("data directory of the task (GLUE: holding SST-2/ etc.)", None)
    file: str | None = option("a labelled file to evaluate instead of the task's dev files", None)
    batch_size: int = option("examples per batch", 128)
    out: str | None = option("directory for evaluate.json (and the resolved config)", None)
    device: str = device_option()

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a fine-tuned model directory)")
        if not self.data and not self.file:
            raise ConfigError("give --data DIR or --file FILE")


def _load_for(config) -> tuple[nn.Module, TaskSetup, WordPieceTokenizer]:
    model, setup, tokenizer = load_finetuned(config.model)
    if config.task and config.task != setup.task:
        other = task_spec(config.task)  # e.g. a model fine-tuned on mnli, evaluated on rte files
        if other.head != setup.head or (other.labels and list(other.labels) != setup.labels):
            raise ConfigError(
                f"task {config.task!r} does not fit a model fine-tuned for {setup.task!r} "
                f"(head {setup.head}, labels {', '.join(setup.labels) or 'none'})"
            )
        setup = dataclasses.replace(setup, task=config.task)
    return model.to(pick_device(config.device)), setup, tokenizer


def run_evaluate(config: EvaluateConfig) -> dict:
    model, setup, tokenizer = _load_for(config)
    if config.file:
        splits = {"file": config.file}
    else:
        splits = {
            split: split_path(setup.spec, config.data, split) for split in setup.spec.dev_splits
        }
    results = {}
    for split, path in splits.items():
        examples = setup.read(path, setup.spec.dev_splits[0])
        features = setup.featurize(examples, tokenizer)
        scores, _ = evaluate_examples(
            model, setup, examples, features, tokenizer.pad_id, config.batch_size
        )
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
    input: str = option("file to predict (GLUE: a test_*.tsv reads unlabelled)", "")
    out: str = option("predictions file: GLUE tsv, SQuAD json or CoNLL `word gold pred`", "")
    task: str | None = option("task (default: the model's)", None)
    batch_size: int = option("examples per batch", 128)
    device: str = device_option()

    def __post_init__(self):
        if not (self.model and self.input and self.out):
            raise ConfigError("model, input and out are required")


def run_predict(config: PredictConfig) -> Path:
    model, setup, tokenizer = _load_for(config)
    labelled = setup.head in ("span_qa", "tagging") or (
        setup.spec.reader == "glue" and not Path(config.input).name.lower().startswith("test")
    )
    examples = setup.read(config.input, setup.spec.dev_splits[0], labelled)
    features = setup.featurize(examples, tokenizer, labelled=False)
    pad_id = tokenizer.pad_id
    predictions, notes = predict(model, setup, examples, features, pad_id, config.batch_size)
    path = write_predictions(setup, examples, predictions, config.out)
    unpredicted = notes.get("words_unpredicted")
    extra = f" ({unpredicted} words without a sub-token: O)" if unpredicted else ""
    print(f"predict: {len(examples)} {setup.task} examples -> {path}{extra}")
    return path
