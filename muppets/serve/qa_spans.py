"""The best answer span of every question of a served batch at once: tasks/prediction.py's
`example_span` (span_decoding.best_span over all windows of one question), computed for all the
batch's windows in one set of numpy calls instead of a dozen calls a question.

The rule is example_span's, to the tie: span (i, j) of window w scores start[w, i] + end[w, j] in
float64, with i <= j < i + max_answer_length and i..j inside the window's context tokens; a
question's answer is the first maximum in (window, start, end) order over its windows. A served
window's context tokens are one run [context_start, context_start + C) (qa_features), so a start
i has min(context_end - i, L) ends, as best_window_span's `room`. Scores must be finite (the
server refuses non-finite outputs before decoding); anything else goes to example_span itself.

Shapes:
    W  windows of the batch    T  longest window    L  max_answer_length    Q  questions
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from muppets.tasks.prediction import example_span
from muppets.tasks.span_decoding import SpanPrediction

CHUNK = 64  # windows decoded at once: a (64, T, L) float64 band is 3.9 MB at T = 256, L = 30


def batch_spans(
    setup, examples: list, features: list, scores: list, owners: list[int] | None = None
) -> list[SpanPrediction]:
    """One SpanPrediction per example, equal to example_span(setup, example, its windows, their
    scores). owners[w]: the index in `examples` of window w's question (default: each feature's
    own `example`, for one request's features); scores[w]: window w's (T_w, 2) [start, end]
    scores; a question's windows keep their order in `features`."""
    if not examples:
        return []
    owners = [f.example for f in features] if owners is None else owners
    windows: list[list[int]] = [[] for _ in examples]
    for w, owner in enumerate(owners):
        windows[owner].append(w)
    if not all(windows):  # a question without a window: example_span's own error
        return _one_by_one(setup, examples, features, scores, windows)
    W, T, L = len(features), max(len(f) for f in features), setup.max_answer_length
    starts_ends = np.full((W, T, 2), -np.inf)  # (W, T, 2) float64, as example_span's
    for w, row in enumerate(scores):
        starts_ends[w, : len(row)] = row
    lengths = np.array([len(f) for f in features])
    real = np.arange(T) < lengths[:, None]  # (W, T)
    if not np.isfinite(starts_ends[real]).all():  # the general path keeps its NaN/inf rules
        return _one_by_one(setup, examples, features, scores, windows)
    s, e = starts_ends[..., 0], starts_ends[..., 1]  # (W, T)
    first = np.array([f.context_start for f in features])  # (W,)
    end = first + np.array([0 if f.offsets is None else len(f.offsets) for f in features])
    best, at = np.empty(W), np.empty(W, dtype=np.int64)
    for a in range(0, W, CHUNK):  # a bounded (chunk, T, L) band, whatever the batch
        b = a + CHUNK
        best[a:b], at[a:b] = window_bests(s[a:b], e[a:b], first[a:b], end[a:b], L)
    has_span = end > first  # (W,) the window has a context token
    rows = np.arange(W)
    null_index = [f.null_index for f in features]  # (W,) [CLS] of each window
    nulls = s[rows, null_index] + e[rows, null_index]  # (W,) float64, as null_score's
    return [
        _prediction(setup, examples[q], features, mine, best, at, has_span, nulls, L)
        for q, mine in enumerate(windows)
    ]


def window_bests(s, e, first, end, L: int) -> tuple[np.ndarray, np.ndarray]:
    """(best, at) of each window: the best span's score and where it is (start * L + length - 1),
    the first maximum in (start, length) order; s, e (W, T) float64, context tokens [first, end).
    """
    W, T = s.shape
    position = np.arange(T)
    context = (position >= first[:, None]) & (position < end[:, None])  # (W, T)
    room = np.where(context, np.minimum(end[:, None] - position, L), 0)  # (W, T)
    # band[w, i, k] = end score of token i + k (-inf past T): one strided view, no copy
    padded = np.concatenate([e, np.full((W, L - 1), -np.inf)], axis=1)  # (W, T + L - 1)
    stride_w, stride_t = padded.strides
    band = as_strided(padded, (W, T, L), (stride_w, stride_t, stride_t), writeable=False)
    valid = np.arange(L) < room[..., None]  # (W, T, L)
    total = np.where(valid, s[..., None] + band, -np.inf).reshape(W, T * L)
    at = total.argmax(1)  # (W,) first maximum of each window in (start, length) order
    return total[np.arange(W), at], at


def _prediction(setup, example, features, mine, best, at, has_span, nulls, L) -> SpanPrediction:
    """One question's span from its windows' best spans: the first window holding the maximum
    (best_window_span's argmax over (window, start, length) in one question)."""
    null = float(np.min(nulls[mine])) if setup.squad_v2 else math.nan
    chosen = -1
    for local, w in enumerate(mine):
        if has_span[w] and (chosen < 0 or best[w] > best[mine[chosen]]):
            chosen = local
    if chosen < 0:  # no window has a context token
        return SpanPrediction("", -1, -1, float("-inf"), null, -1, -1, -1)
    w = mine[chosen]
    i, k = divmod(int(at[w]), L)
    feature = features[w]
    char_start = int(feature.offsets[i - feature.context_start, 0])
    char_end = int(feature.offsets[i + k - feature.context_start, 1])
    if not 0 <= char_start <= char_end <= len(example.context):
        raise ValueError(
            f"window {chosen}: tokens {i}..{i + k} map to characters {char_start}..{char_end}, "
            f"outside the context of {len(example.context)} characters"
        )
    text = example.context[char_start:char_end]
    return SpanPrediction(text, char_start, char_end, float(best[w]), null, chosen, i, i + k)


def _one_by_one(setup, examples, features, scores, windows) -> list[SpanPrediction]:
    return [
        example_span(setup, example, [features[w] for w in mine], [scores[w] for w in mine])
        for example, mine in zip(examples, windows, strict=True)
    ]
