"""Fine-tuned models' predictions: length-sorted batches, exact decoding, scores and the files
that hold them.

Decoding is exact and batch-independent: a QA question's answer is span_decoding.best_span over ALL
its windows, a word's tag is its first sub-token's.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muppets.data.task_features import bucketed_batches, inference_batches
from muppets.errors import InputError
from muppets.tasks.classification import class_predictions
from muppets.tasks.registry import score
from muppets.tasks.setup import TaskSetup
from muppets.tasks.span_decoding import SpanPrediction, best_span

NONFINITE = "outputs that are NaN or infinite: its weights are broken (a diverged checkpoint?)"

PROGRESS_BATCHES = 20  # a progress bar on stderr from this many batches on


@torch.inference_mode()
def predict(
    model: nn.Module,
    setup: TaskSetup,
    examples: list,
    features: list,
    pad_id: int,
    batch_size: int = 128,
    context: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[object, dict]:
    """Predictions of every example, and decoding notes.

    Returns label ids / floats (classification, regression), tag lists (tagging) or
    {question id: text} (QA); notes: for SQuAD v2.0 {"null_odds": {...}, "spans": {...}} (the
    best non-null span of every question, for the best-threshold search), {"words_unpredicted":
    n} for tagging (words without a sub-token, tagged "O"). Many batches show a progress bar.
    `context()`: what each forward runs in (the run's autocast: training/precision.py).
    """
    from tqdm.auto import tqdm

    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    outputs: list = [None] * len(features)  # per feature, trimmed to its own length
    n_batches = len(bucketed_batches([len(f) for f in features], batch_size))
    bar = tqdm(
        inference_batches(features, batch_size, pad_id),
        total=n_batches,
        disable=n_batches < PROGRESS_BATCHES,
        file=sys.stderr,
        unit="batch",
        desc="predict",
        leave=False,
    )
    for indices, batch in bar:
        batch = {k: v.to(device) for k, v in batch.items()}
        with context():  # the run's autocast (training/precision.py), or nothing: fp32
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        logits = torch.stack([out.start, out.end]) if setup.head == "span_qa" else out
        if not torch.isfinite(logits).all():  # argmax of NaN is a label: refuse, do not write
            bar.close()
            model.train(was_training)
            raise InputError(f"the model gives {NONFINITE}")
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
        return decode_tags(setup, examples, features, outputs)
    values = np.array(outputs)
    return (values.astype(float) if setup.head == "regression" else values.astype(int)), {}


def decode_tags(setup, sentences, features, outputs):
    """Word tags (each word its first sub-token's) from per-feature (T,) tag ids."""
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
    answers, null_odds, spans = {}, {}, {}
    for example, mine in zip(examples, windows, strict=True):
        span = example_span(setup, example, [features[i] for i in mine], [outputs[i] for i in mine])
        answers[example.id] = "" if unanswered(setup, span) else span.text
        if setup.squad_v2:
            null_odds[example.id] = span.null_odds
            spans[example.id] = span.text
    notes = {"null_odds": null_odds, "spans": spans} if setup.squad_v2 else {}
    return answers, notes


def example_span(setup: TaskSetup, example, windows: list, scores: list) -> SpanPrediction:
    """The best span of one question over all its windows (features) and their (T, 2) [start,
    end] scores; for SQuAD v2.0 with its null score beside it (`unanswered` applies the
    threshold). The one span decoding of predict, evaluate and serve."""
    T = max(len(f) for f in windows)
    starts_ends = np.full((len(windows), T, 2), -np.inf)  # (W, T, [start, end])
    mask = np.zeros((len(windows), T), dtype=bool)
    offsets = np.zeros((len(windows), T, 2), dtype=np.int64)
    for w, (feature, row) in enumerate(zip(windows, scores, strict=True)):
        n = len(feature)
        starts_ends[w, :n], mask[w, :n] = row, feature.context_mask
        offsets[w, :n] = feature.token_offsets
    # v2.0: the null score beside the best span, then the threshold: one decoding for the file
    # and the score (an infinite threshold never answers "" by itself)
    threshold = math.inf if setup.squad_v2 else None
    return best_span(
        starts_ends[..., 0],
        starts_ends[..., 1],
        mask,
        offsets,
        example.context,
        setup.max_answer_length,
        threshold,
        np.array([feature.null_index for feature in windows]),  # (W,) [CLS] of each window
    )


def unanswered(setup: TaskSetup, span: SpanPrediction) -> bool:
    """SQuAD v2.0: the null score beats the best span by more than the model's threshold."""
    return bool(setup.squad_v2) and span.null_odds > setup.null_threshold


def evaluate_examples(
    model, setup: TaskSetup, examples, features, pad_id, batch_size=128, context=nullcontext
):
    """(scores, predictions) on labelled examples: the scores are those of the predictions
    returned (written), whatever decoding produced them. SQuAD v2.0 adds the threshold used and
    evaluate-v2.0.py's best thresholds (best_exact_thresh, best_f1_thresh) on these examples."""
    predictions, notes = predict(model, setup, examples, features, pad_id, batch_size, context)
    return scores_of(setup, examples, predictions, notes), predictions


def scores_of(setup: TaskSetup, examples: list, predictions, notes: dict) -> dict:
    """The scores of predictions made by any model kind (notes: what `predict` returns)."""
    null_odds, spans = notes.get("null_odds"), notes.get("spans")
    scores = score(setup.spec, examples, predictions, setup.squad_v2, null_odds, spans)
    if setup.squad_v2:
        scores["null_threshold"] = float(setup.null_threshold)
    return {**scores, **{k: v for k, v in notes.items() if not isinstance(v, dict)}}


def numbers(scores: dict) -> dict[str, float]:
    """The numeric entries of a scores dict (drops per-type breakdowns)."""
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float)}


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
            lines += [
                f"{w} {g} {p}" for w, g, p in zip(sentence.words, sentence.tags, tags, strict=True)
            ]
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
