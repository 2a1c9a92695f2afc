"""Exact best-span decoding: brute force over all windows on random scores, a case where BERT's
top-20 heuristic picks a worse span, spans never crossing out of the context, the no-answer
threshold, and the mapping back to characters."""

import numpy as np
import pytest
import torch

from muppets.tasks.span_decoding import best_span, best_window_span, null_score

NEG = -np.inf


def brute_force(start, end, mask, L):
    """Every (w, i, j) with i <= j < i + L and all of i..j context; strict > keeps the first."""
    best = (NEG, -1, -1, -1)
    for w in range(start.shape[0]):
        for i in range(start.shape[1]):
            for j in range(i, min(i + L, start.shape[1])):
                if mask[w, i : j + 1].all() and start[w, i] + end[w, j] > best[0]:
                    best = (start[w, i] + end[w, j], w, i, j)
    return best


def bert_layout(rng, W, T):
    """[CLS] question [SEP] context [SEP] padding, per window (the context is contiguous)."""
    mask = np.zeros((W, T), dtype=bool)
    for w in range(W):
        q = int(rng.integers(1, 4))
        n = int(rng.integers(0, max(1, T - q - 2)))
        mask[w, q + 2 : q + 2 + n] = True
    return mask


def test_exact_search_equals_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    for trial in range(400):
        W, T, L = int(rng.integers(1, 4)), int(rng.integers(4, 18)), int(rng.integers(1, 7))
        start, end = rng.normal(size=(2, W, T))
        # half the trials: random masks with several context runs per window
        mask = bert_layout(rng, W, T) if trial % 2 else rng.random((W, T)) < 0.7
        expected = brute_force(start, end, mask, L)
        assert best_window_span(start, end, mask, L) == expected
        if expected[1] >= 0:  # a (T,) input is one window
            w = expected[1]
            one = best_window_span(start[w], end[w], mask[w], L)
            assert one[0] == expected[0]


def test_top_20_heuristic_misses_what_the_exact_search_finds():
    """BERT's run_squad.py pairs only the 20 best starts with the 20 best ends. Here the best
    span starts at the 21st best start, so the heuristic settles for a span 98 points worse."""
    T, L = 40, 3
    mask = np.zeros(T, dtype=bool)
    mask[6:39] = True  # [CLS] q q q q [SEP] context(6..38) [SEP]
    start, end = np.zeros(T), np.zeros(T)
    start[6:26], end[6:26] = 10.0, 1.0  # 20 starts at 10.0, ends at 1.0
    start[30], end[30] = 9.0, 100.0  # the 21st start, the best end

    def top_n(start, end, n=20):
        starts, ends = np.argsort(-start, kind="stable")[:n], np.argsort(-end, kind="stable")[:n]
        pairs = [
            (start[i] + end[j], i, j)
            for i in starts
            for j in ends
            if mask[i] and mask[j] and i <= j < i + L
        ]
        return max(pairs)

    assert top_n(start, end)[0] == 11.0
    assert best_window_span(start, end, mask, L) == (109.0, 0, 30, 30)
    assert brute_force(start[None], end[None], mask[None], L) == (109.0, 0, 30, 30)


def test_spans_never_leave_the_context():
    # question token 2 has the best start, [SEP] 4 and padding 9 the best ends
    start = np.array([0.0, 0.0, 50.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0])
    end = np.array([0.0, 0.0, 0.0, 0.0, 80.0, 0.0, 3.0, 1.0, 0.0, 90.0])
    mask = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 0], dtype=bool)
    assert best_window_span(start, end, mask, max_answer_length=30) == (5.0, 0, 6, 6)
    # two context runs in one window (5..6 and 8..9): a span cannot bridge token 7
    mask = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 1], dtype=bool)
    start = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0])
    end = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 5.0, 5.0])
    assert best_window_span(start, end, mask, max_answer_length=30) == (10.0, 0, 5, 6)
    assert best_window_span(start, end, np.zeros(10, dtype=bool)) == (NEG, -1, -1, -1)


CONTEXT = "Ada Lovelace wrote the first program in 1843."


def windows():
    """Two doc-stride windows over CONTEXT's words, [CLS] q [SEP] words [SEP]; word k of the
    context is in window 0 for k < 5 and in window 1 for k >= 3."""
    words, spans, pos = CONTEXT.split(), [], 0
    for word in words:
        pos = CONTEXT.index(word, pos)
        spans.append((pos, pos + len(word)))
        pos += len(word)
    T = 3 + 5 + 1
    offsets, mask = np.zeros((2, T, 2), dtype=np.int64), np.zeros((2, T), dtype=bool)
    for w, first in enumerate((0, 3)):
        for t, k in enumerate(range(first, min(first + 5, len(words)))):
            offsets[w, 3 + t], mask[w, 3 + t] = spans[k], True
    return offsets, mask


def test_best_span_over_windows_maps_back_to_characters():
    offsets, mask = windows()
    start, end = np.full((2, 9), -5.0), np.full((2, 9), -5.0)
    # "the first program": words 3..5; "first" (word 4) is in both windows, scored differently
    start[0, 3 + 3], end[0, 3 + 4] = 2.0, 2.5  # window 0: "the first" = 4.5
    start[1, 3 + 0], end[1, 3 + 2] = 2.2, 2.4  # window 1: "the first program" = 4.6
    prediction = best_span(start, end, mask, offsets, CONTEXT, max_answer_length=5)
    assert (prediction.text, prediction.char_start, prediction.char_end) == (
        "the first program",
        19,
        36,
    )
    assert (prediction.window, prediction.start_token, prediction.end_token) == (1, 3, 5)
    assert prediction.score == pytest.approx(4.6, abs=1e-12)
    # max_answer_length 2 rules the 3-word span out: window 0 wins
    assert best_span(start, end, mask, offsets, CONTEXT, max_answer_length=2).text == "the first"
    # torch tensors (float32) give the same answer
    start32 = torch.tensor(start, dtype=torch.float32)
    tensors = (start32, torch.tensor(end), torch.tensor(mask), torch.tensor(offsets))
    as_torch = best_span(*tensors, CONTEXT, max_answer_length=5)
    assert as_torch.text == "the first program"


def test_no_answer_threshold():
    offsets, mask = windows()
    start, end = np.full((2, 9), -5.0), np.full((2, 9), -5.0)
    start[:, 3 + 1], end[:, 3 + 1] = 1.0, 1.0  # best span: a single word, score 2.0
    start[:, 0], end[:, 0] = [3.0, 1.5], 1.0  # null scores 4.0 and 2.5: min 2.5
    assert null_score(start, end) == 2.5
    prediction = best_span(start, end, mask, offsets, CONTEXT, null_threshold=0.0)
    assert (prediction.text, prediction.null_score, prediction.null_odds) == ("", 2.5, 0.5)
    assert prediction.char_start == -1
    # 2.5 - 2.0 = 0.5 is not above 0.5: answer
    kept = best_span(start, end, mask, offsets, CONTEXT, null_threshold=0.5)
    assert (kept.text, kept.null_odds) == ("Lovelace", 0.5)
    # SQuAD v1.1 (no threshold) always answers and does not compute the null score
    v1 = best_span(start, end, mask, offsets, CONTEXT)
    assert v1.text == "Lovelace" and np.isnan(v1.null_score)


def test_bad_inputs():
    offsets, mask = windows()
    scores = np.zeros((2, 9))
    with pytest.raises(
        ValueError, match=r"shapes differ: start \(2, 9\), end \(1, 9\), mask \(2, 9\)"
    ):
        best_window_span(scores, scores[:1], mask)
    with pytest.raises(ValueError, match="max_answer_length must be >= 1, got 0"):
        best_window_span(scores, scores, mask, 0)
    nan = scores.copy()
    nan[0, 4] = np.nan
    with pytest.raises(ValueError, match="the start/end scores contain NaN"):
        best_window_span(nan, scores, mask)
    with pytest.raises(
        ValueError, match="window 0: tokens 3..3 map to characters 0..3, outside the context of 2"
    ):
        best_span(scores, scores, mask, offsets, "Ad")
