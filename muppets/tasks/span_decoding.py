"""Exact best answer span over all doc-stride windows of one question, back to context characters.

The span (i, j) of window w scores start[w, i] + end[w, j] (log space: P_start(i) * P_end(j)),
with i <= j <= i + max_answer_length - 1, and every token of i..j a context token. BERT's
run_squad.py searches only the top-n (20) starts x top-n ends, which can miss the best span
when a high-scoring end sits behind a start ranked below n; here the search is exact:

  for every start i, max over j in [i, i + L - 1] of end[j]   -- a (W, T, L) band, vectorised

The same context token can appear in several windows; the best score over all windows wins
(ties: the earliest window, start, end). Scores are whatever the caller passes: raw logits
(compared across windows as run_squad.py does) or per-window log-softmax values.

SQuAD v2.0: the no-answer score is start + end at the [CLS] position (`null_index`), the minimum
over windows (run_squad.py); the answer is "" when null_score - best_span_score > threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True, slots=True)
class SpanPrediction:
    text: str  # "" when no answer is predicted (or no window has a context token)
    char_start: int  # the span's characters are context[char_start:char_end]; -1 when none
    char_end: int
    score: float  # start + end of the best span; -inf when there is none
    null_score: float  # min over windows of start + end at null_index; nan without a threshold
    window: int  # where the best span is (-1 when none)
    start_token: int
    end_token: int

    @property
    def null_odds(self) -> float:
        """null_score - score: evaluate-v2.0.py's `na_prob` for the best-threshold search."""
        return self.null_score - self.score


def best_window_span(
    start_scores, end_scores, context_mask, max_answer_length: int = 30
) -> tuple[float, int, int, int]:
    """(score, window, start, end) of the exact best span; (-inf, -1, -1, -1) when no window has
    a context token. Inputs are (W, T) (or (T,) for one window); tokens outside the mask (question,
    specials, padding) are never part of a span."""
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length must be >= 1, got {max_answer_length}")
    s, e = _as_windows(start_scores, np.float64), _as_windows(end_scores, np.float64)
    mask = _as_windows(context_mask, bool)
    if not s.shape == e.shape == mask.shape:
        raise ValueError(f"shapes differ: start {s.shape}, end {e.shape}, mask {mask.shape}")
    if np.isnan(s[mask]).any() or np.isnan(e[mask]).any():
        raise ValueError("the start/end scores contain NaN")
    W, T = s.shape
    L = max_answer_length
    position = np.arange(T)
    # room[w, i]: how many ends j = i, i+1, ... keep i..j inside the context run that holds i
    breaks = np.where(mask, T, position)  # (W, T): a position that is not context
    next_break = np.minimum.accumulate(breaks[:, ::-1], axis=1)[:, ::-1]  # (W, T)
    room = np.minimum(next_break - position, L)  # (W, T), 0 where i is not context
    padded = np.concatenate([e, np.full((W, L - 1), -np.inf)], axis=1)  # (W, T + L - 1)
    band = sliding_window_view(padded, L, axis=1)  # (W, T, L): band[w, i, k] = end[w, i + k]
    valid = np.arange(L) < room[..., None]  # (W, T, L)
    if not valid.any():
        return float("-inf"), -1, -1, -1
    total = np.where(valid, s[..., None] + band, -np.inf)  # (W, T, L)
    best = int(np.argmax(total))  # first maximum in (window, start, length) order
    if not valid.flat[best]:  # every valid span scores -inf: take the first valid one
        best = int(np.flatnonzero(valid)[0])
    w, i, k = np.unravel_index(best, total.shape)
    return float(total.flat[best]), int(w), int(i), int(i + k)


def null_score(start_scores, end_scores, null_index: int | np.ndarray = 0) -> float:
    """min over windows of start + end at the [CLS] position (run_squad.py's score_null);
    null_index: one position, or one per window (XLNet's <cls> ends each window)."""
    s, e = _as_windows(start_scores, np.float64), _as_windows(end_scores, np.float64)
    rows = np.arange(len(s))
    return float(np.min(s[rows, null_index] + e[rows, null_index]))


def best_span(
    start_scores,
    end_scores,
    context_mask,
    offsets,
    context: str,
    max_answer_length: int = 30,
    null_threshold: float | None = None,
    null_index: int | np.ndarray = 0,
) -> SpanPrediction:
    """The best answer of one question from all its windows, as characters of `context`.

    start_scores, end_scores: (W, T) per-token scores of the W windows (numpy or torch);
    context_mask: (W, T) bool, True for context tokens; offsets: (W, T, 2) [start, end) character
    offsets of each token in `context` (a tokenizer's offset mapping, shifted to the context).
    null_threshold: None for SQuAD v1.1 (always answer); a number for v2.0 (answer "" when
    null_score - best span score > null_threshold; run_squad.py's default threshold is 0.0).
    """
    score, w, i, j = best_window_span(start_scores, end_scores, context_mask, max_answer_length)
    null = float("nan")
    if null_threshold is not None:
        null = null_score(start_scores, end_scores, null_index)
    if w < 0 or (null_threshold is not None and null - score > null_threshold):
        return SpanPrediction("", -1, -1, score, null, w, i, j)
    spans = _as_windows(offsets, np.int64, extra_dims=1)  # (W, T, 2)
    char_start, char_end = int(spans[w, i, 0]), int(spans[w, j, 1])
    if not 0 <= char_start <= char_end <= len(context):
        raise ValueError(
            f"window {w}: tokens {i}..{j} map to characters {char_start}..{char_end}, "
            f"outside the context of {len(context)} characters"
        )
    return SpanPrediction(context[char_start:char_end], char_start, char_end, score, null, w, i, j)


def _as_windows(x, dtype, extra_dims: int = 0) -> np.ndarray:
    """numpy (W, T, ...) array from numpy or torch input (a single window (T, ...) gets W = 1)."""
    if hasattr(x, "detach"):  # a torch tensor, possibly on GPU or in bfloat16
        x = x.detach().cpu()
        x = x.double() if dtype is np.float64 else x
        x = x.numpy()
    x = np.asarray(x, dtype=dtype)
    if x.ndim == 1 + extra_dims:
        x = x[None]
    if x.ndim != 2 + extra_dims:
        raise ValueError(f"expected (windows, tokens{', 2' * extra_dims}), got shape {x.shape}")
    return x
