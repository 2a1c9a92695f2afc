"""Fine-tuned models: featurize, predict in length-sorted batches, decode, score, write; the
`muppets evaluate` and `muppets predict` commands.

A fine-tuned checkpoint directory is config.json (the encoder's), model.safetensors (encoder +
head), the tokenizer files, and task.json (a `TaskSetup`: task, head, labels, max_seq_length and
the task's decoding options). Decoding is exact and batch-independent: a QA question's answer is
span_decoding.best_span over ALL its windows, a word's tag is its first sub-token's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muppets.data.task_features import (
    classification_features,
    inference_batches,
    qa_features,
    tagging_features,
)
from muppets.errors import ConfigError, InputError
from muppets.models.bert import BertConfig
from muppets.models.registry import build_encoder
from muppets.tasks.classification import class_predictions
from muppets.tasks.registry import Columns, TaskSpec, build_head, read_split, score, task_spec
from muppets.tasks.span_decoding import best_span
from muppets.tokenization.wordpiece import WordPieceTokenizer, load_tokenizer
from muppets.training.checkpoint import load_weights, read_config

TASK_FILE = "task.json"


@dataclass
class TaskSetup:
    """What task.json holds: enough to featurize, decode and name the predictions again."""

    task: str
    head: str
    labels: list[str]
    max_seq_length: int
    pooling: str = "pooler"
    columns: dict = field(default_factory=dict)  # tabular tasks: a Columns as a dict
    squad_v2: bool = False
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    null_threshold: float = 0.0  # SQuAD v2.0: answer "" when null - best span score > this

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def featurize(self, examples: list, tokenizer: WordPieceTokenizer, labelled: bool = True):
        if self.head == "span_qa":
            return qa_features(
                examples, tokenizer, self.max_seq_length, self.doc_stride, self.max_query_length
            )
        if self.head == "tagging":
            labels = self.labels if labelled else None
            return tagging_features(examples, tokenizer, self.max_seq_length, labels)
        return classification_features(examples, tokenizer, self.max_seq_length)

    def read(self, path: str | Path, split: str, labelled: bool = True) -> list:
        return read_split(self.spec, path, split, self.labels, Columns(**self.columns), labelled)


@torch.no_grad()
def predict(
    model: nn.Module, setup: TaskSetup, examples: list, features: list, pad_id: int,
    batch_size: int = 128,
) -> tuple[object, dict]:  # fmt: skip
    """Predictions of every example, and decoding notes.

    Returns label ids / floats (classification, regression), tag lists (tagging) or
    {question id: text} (QA); notes: {"null_odds": {...}} for SQuAD v2.0, {"words_unpredicted":
    n} for tagging (words without a sub-token, tagged "O").
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    outputs: list = [None] * len(features)  # per feature, trimmed to its own length
    for indices, batch in inference_batches(features, batch_size, pad_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        if setup.head == "span_qa":
            rows = torch.stack([out.start, out.end], -1).float().cpu().numpy()  # (B, T, 2)
        elif setup.head == "tagging":
            rows = out.argmax(-1).cpu().numpy()  # (B, T)
        else:
            rows = class_predictions(out.float()).cpu().numpy()  # (B,)
        for i, row in zip(indices, rows, strict=True):
            outputs[i] = row[: len(features[i])] if setup.head in ("span_qa", "tagging") else row
    model.train(was_training)
    if setup.head == "span_qa":
        return _decode_spans(setup, examples, features, outputs)
    if setup.head == "tagging":
        return _decode_tags(setup, examples, features, outputs)
    values = np.array(outputs)
    return (values.astype(float) if setup.head == "regression" else values.astype(int)), {}


def _decode_tags(setup, sentences, features, outputs):
    fill = "O" if "O" in setup.labels else setup.labels[0]
    words = [[None] * len(s.words) for s in sentences]
    for feature, tags in zip(features, outputs, strict=True):
        for word, tag in zip(feature.word_ids, tags, strict=True):
            if word >= 0 and words[feature.example][word] is None:  # the first sub-token
                words[feature.example][word] = setup.labels[int(tag)]
    missing = sum(w is None for sentence in words for w in sentence)
    tags = [[fill if w is None else w for w in sentence] for sentence in words]
    return tags, {"words_unpredicted": missing}


def _decode_spans(setup, examples, features, outputs):
    windows: list[list[int]] = [[] for _ in examples]
    for i, feature in enumerate(features):
        windows[feature.example].append(i)
    answers, null_odds = {}, {}
    threshold = setup.null_threshold if setup.squad_v2 else None
    for example, mine in zip(examples, windows, strict=True):
        T = max(len(features[i]) for i in mine)
        scores = np.full((len(mine), T, 2), -np.inf)  # (W, T, [start, end])
        mask = np.zeros((len(mine), T), dtype=bool)
        offsets = np.zeros((len(mine), T, 2), dtype=np.int64)
        for w, i in enumerate(mine):
            n = len(features[i])
            scores[w, :n], mask[w, :n] = outputs[i], features[i].context_mask
            offsets[w, :n] = features[i].token_offsets
        span = best_span(scores[..., 0], scores[..., 1], mask, offsets, example.context,
                         setup.max_answer_length, threshold)  # fmt: skip
        answers[example.id] = span.text
        if setup.squad_v2:
            null_odds[example.id] = span.null_odds
    return answers, ({"null_odds": null_odds} if setup.squad_v2 else {})


def evaluate_examples(model, setup: TaskSetup, examples, features, pad_id, batch_size=128):
    """(scores, predictions, notes) on labelled examples."""
    predictions, notes = predict(model, setup, examples, features, pad_id, batch_size)
    scores = score(setup.spec, examples, predictions, setup.squad_v2, notes.get("null_odds"))
    return {**scores, **{k: v for k, v in notes.items() if not isinstance(v, dict)}}, predictions


def numbers(scores: dict) -> dict[str, float]:
    """The numeric entries of a scores dict (drops per-type breakdowns)."""
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float)}


# ---------------------------------------------------------------- files


def write_predictions(setup: TaskSetup, examples: list, predictions, path: str | Path) -> Path:
    """GLUE/tabular: `index<TAB>prediction` (GLUE's submission format); QA: {id: text} JSON;
    tagging: `word gold pred` per line, a blank line after each sentence (conlleval's input)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if setup.head == "span_qa":
        text = json.dumps(predictions, indent=2, ensure_ascii=False) + "\n"
    elif setup.head == "tagging":
        lines = []
        for sentence, tags in zip(examples, predictions, strict=True):
            lines += [f"{w} {g} {p}" for w, g, p in zip(sentence.words, sentence.tags, tags,
                                                       strict=True)]  # fmt: skip
            lines.append("")
        text = "\n".join(lines) + "\n"
    else:
        lines = ["index\tprediction"]
        for example, value in zip(examples, predictions, strict=True):
            index = example.guid.rsplit("-", 1)[-1]  # the example's number = GLUE's index column
            shown = f"{value:.3f}" if setup.head == "regression" else setup.labels[int(value)]
            lines.append(f"{index}\t{shown}")
        text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def save_task(directory: str | Path, setup: TaskSetup) -> None:
    text = json.dumps(dataclasses.asdict(setup), indent=2) + "\n"
    (Path(directory) / TASK_FILE).write_text(text, encoding="utf-8")


def resolve_finetuned(path: str | Path) -> Path:
    """A fine-tuned directory, or a multi-seed run (its best seed, from summary.json)."""
    path = Path(path)
    if (path / TASK_FILE).is_file():
        return path
    summary = path / "summary.json"
    if summary.is_file():
        best = json.loads(summary.read_text(encoding="utf-8"))["best_seed"]
        return path / f"seed-{best}"
    raise InputError(f"not a fine-tuned model: no {TASK_FILE} (run `muppets finetune`)", path)


def load_finetuned(path: str | Path) -> tuple[nn.Module, TaskSetup, WordPieceTokenizer]:
    """(head model in eval mode, its task setup, tokenizer); vocabularies must agree."""
    directory = resolve_finetuned(path)
    task_path = directory / TASK_FILE
    try:
        setup = TaskSetup(**json.loads(task_path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", task_path, e.lineno) from None
    except TypeError as e:
        raise InputError(f"not a task file of this muppets version: {e}", task_path) from None
    try:
        config = BertConfig.from_dict(read_config(directory))
    except ConfigError as e:
        raise ConfigError(e.message, directory / "config.json") from None
    tokenizer = load_tokenizer(directory)
    check_vocabulary(tokenizer, config, directory)
    model = build_head(setup.spec, build_encoder(config), len(setup.labels), pooling=setup.pooling)
    load_weights(model, directory)
    return model.eval(), setup, tokenizer


def check_vocabulary(tokenizer: WordPieceTokenizer, config: BertConfig, where: object) -> None:
    if tokenizer.vocab_size != config.vocab_size:
        raise InputError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}: they come from different vocabularies",
            where,
        )


def plot_dev_scores(history: list[dict], metric: str, png_path: str | Path) -> Path:
    """The dev metric against the epoch, as a PNG (matplotlib imported here: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    points = [(h["epoch"], h[metric]) for h in history if not math.isnan(h.get(metric, math.nan))]
    if points:
        ax.plot(*zip(*points, strict=True), "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"dev {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)


# ---------------------------------------------------------------- commands


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class EvaluateConfig:
    model: str = _help("fine-tuned model directory (or a multi-seed run: its best seed)", "")
    task: str | None = _help("task (default: the model's)", None)
    data: str | None = _help("data directory of the task (GLUE: holding SST-2/ etc.)", None)
    file: str | None = _help("a labelled file to evaluate instead of the task's dev files", None)
    batch_size: int = _help("examples per batch", 128)
    out: str | None = _help("directory for evaluate.json (and the resolved config)", None)
    device: str = _help("cpu, cuda or auto", "auto")

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a fine-tuned model directory)")
        if not self.data and not self.file:
            raise ConfigError("give --data DIR or --file FILE")


def pick_device(name: str) -> torch.device:
    """ "auto": CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    from muppets.tasks.registry import split_path

    model, setup, tokenizer = _load_for(config)
    splits = {"file": config.file} if config.file else {
        split: split_path(setup.spec, config.data, split) for split in setup.spec.dev_splits
    }  # fmt: skip
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
    model: str = _help("fine-tuned model directory (or a multi-seed run: its best seed)", "")
    input: str = _help("file to predict (GLUE: a test_*.tsv reads unlabelled)", "")
    out: str = _help("predictions file: GLUE tsv, SQuAD json or CoNLL `word gold pred`", "")
    task: str | None = _help("task (default: the model's)", None)
    batch_size: int = _help("examples per batch", 128)
    device: str = _help("cpu, cuda or auto", "auto")

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
    predictions, notes = predict(model, setup, examples, features, tokenizer.pad_id,
                                 config.batch_size)  # fmt: skip
    path = write_predictions(setup, examples, predictions, config.out)
    extra = f" ({notes['words_unpredicted']} words without a sub-token: O)" if notes.get(
        "words_unpredicted") else ""  # fmt: skip
    print(f"predict: {len(examples)} {setup.task} examples -> {path}{extra}")
    return path
