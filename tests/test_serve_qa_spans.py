"""serve/qa_spans.py's batch decoding gives tasks/prediction.py's example_span, question by
question, to the tie: random windows (several a question, contexts at any place, some without
context tokens) with integer scores from a small range, so equal spans are everywhere."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from muppets.data.task_features import Feature
from muppets.serve import qa_spans
from muppets.serve.qa_spans import batch_spans
from muppets.tasks.prediction import example_span


def random_question(rng: np.random.Generator, n: int, windows: int):
    """(example, features, scores): `windows` windows over one context, scores (T, 2) float32."""
    context = "".join(rng.choice(list("abcde ")) for _ in range(int(rng.integers(20, 80))))
    features, scores = [], []
    for _ in range(windows):
        T = int(rng.integers(4, 40))
        start = int(rng.integers(1, T - 1))  # the question and [SEP] before the context
        size = int(rng.integers(0, T - start))  # 0: a window without context tokens
        cuts = np.sort(rng.integers(0, len(context) + 1, size=2 * size)).reshape(size, 2)
        ids = np.zeros(T, dtype=np.int32)
        feature = Feature(n, ids, np.zeros(T, dtype=np.int8), {}, None, cuts, start, 0)
        features.append(feature)
        scores.append(rng.integers(-3, 3, size=(T, 2)).astype(np.float32))
    return SimpleNamespace(context=context), features, scores


def same(a, b) -> bool:
    """Two SpanPredictions equal field by field (NaN null scores equal)."""
    return all(
        x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(
            (a.text, a.char_start, a.char_end, a.score, a.null_score, a.window),
            (b.text, b.char_start, b.char_end, b.score, b.null_score, b.window),
            strict=True,
        )
    ) and (a.start_token, a.end_token) == (b.start_token, b.end_token)


@pytest.mark.parametrize("squad_v2", [False, True])
@pytest.mark.parametrize("max_answer_length", [1, 3, 30])
@pytest.mark.parametrize("chunk", [qa_spans.CHUNK, 5])
def test_batch_spans_equal_example_span_with_ties(squad_v2, max_answer_length, chunk, monkeypatch):
    monkeypatch.setattr(qa_spans, "CHUNK", chunk)  # 5: a batch's windows in several bands
    rng = np.random.default_rng(max_answer_length + 100 * squad_v2)
    setup = SimpleNamespace(squad_v2=squad_v2, max_answer_length=max_answer_length)
    for _ in range(20):  # batches
        questions = [random_question(rng, 0, int(rng.integers(1, 4))) for _ in range(6)]
        # the batch's windows interleaved across questions, each question's in its own order
        order = [(q, k) for q, (_, f, _) in enumerate(questions) for k in range(len(f))]
        order = sorted(order, key=lambda qk: (qk[1], rng.random()))  # windows k, then k + 1
        features = [questions[q][1][k] for q, k in order]
        scores = [questions[q][2][k] for q, k in order]
        found = batch_spans(
            setup, [e for e, _, _ in questions], features, scores, [q for q, _ in order]
        )
        for (example, windows, rows), got in zip(questions, found, strict=True):
            assert same(got, example_span(setup, example, windows, rows))


def test_every_span_tied_takes_the_first_window_start_and_end():
    rng = np.random.default_rng(7)
    setup = SimpleNamespace(squad_v2=False, max_answer_length=4)
    example, features, scores = random_question(rng, 0, 3)
    while not any(len(f.offsets) for f in features):
        example, features, scores = random_question(rng, 0, 3)
    scores = [np.zeros_like(row) for row in scores]
    got = batch_spans(setup, [example], features, scores)[0]
    assert same(got, example_span(setup, example, features, scores))
    w = next(w for w, f in enumerate(features) if len(f.offsets))
    start = features[w].context_start
    assert (got.score, got.window, got.start_token, got.end_token) == (0.0, w, start, start)


def test_non_finite_scores_take_example_spans_own_path():
    rng = np.random.default_rng(3)
    setup = SimpleNamespace(squad_v2=True, max_answer_length=5)
    example, features, scores = random_question(rng, 0, 2)
    scores[0][0, 0] = -np.inf  # the [CLS] start: the null score is -inf
    got = batch_spans(setup, [example], features, scores)[0]
    assert same(got, example_span(setup, example, features, scores))
