"""Masking: exact seeded outputs on a hand-built sequence, binomial bounds on >= 100k tokens, and
the invariants (specials untouched, words whole, spans from the clipped geometric law)."""

from functools import partial

import numpy as np
import pytest
import torch

from muppets.data.masking import (
    IGNORE_INDEX,
    MaskingConfig,
    _words,
    mask_batch,
    mask_spans,
    mask_tokens,
    mask_whole_words,
    num_to_predict,
    sample_spans,
    span_length_pmf,
)
from muppets.errors import ConfigError

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SMALL = MaskingConfig(vocab_size=30, mask_id=MASK, special_ids=(PAD, CLS, SEP), masked_lm_prob=0.3)
CONTINUATION = np.arange(30) >= 20  # ids 20..29 are "##" pieces
# [CLS] 5 ##20 | 6 | 7 ##21 ##22 | 8 [SEP] ##23 (starts a word: follows [SEP]) 9 | 10 ##24 | 11 ...
HAND = np.array([CLS, 5, 20, 6, 7, 21, 22, 8, SEP, 23, 9, 10, 24, 11, 12, 13, 14, 15, 16, SEP])
_ = IGNORE_INDEX


def check_invariants(tokens, ids, labels, config):
    """Labels hold the original id exactly where predicted; nothing else changes; specials never."""
    special = np.isin(tokens, config.special_ids)
    predicted = labels != IGNORE_INDEX
    assert not (special & predicted).any()
    assert (ids[special] == tokens[special]).all()
    assert (labels[predicted] == tokens[predicted]).all()
    assert (ids[~predicted] == tokens[~predicted]).all()


def test_num_to_predict_follows_google_rounding_and_cap():
    config = MaskingConfig(vocab_size=10, mask_id=3, special_ids=(), max_predictions_per_seq=20)
    # 128 * .15 = 19.2 -> 19; 10 * .15 = 1.5 -> 2 and 30 * .15 = 4.5 -> 4 (half to even);
    # 3 * .15 = 0.45 -> at least 1; 512 * .15 = 76.8 -> capped at 20.
    got = [num_to_predict(n, config) for n in (128, 10, 30, 3, 512)]
    assert got == [19, 2, 4, 1, 20]


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError, match="mask_id"):
        MaskingConfig(vocab_size=3, mask_id=3, special_ids=())
    with pytest.raises(ConfigError, match="masked_lm_prob"):
        MaskingConfig(vocab_size=5, mask_id=3, special_ids=(), masked_lm_prob=0.0)


def test_mask_tokens_exact_under_seed_0():
    before = HAND.copy()
    ids, labels = mask_tokens(HAND, np.random.default_rng(0), SMALL)
    assert (HAND == before).all()  # input untouched
    # budget round(20 * 0.3) = 6 positions: 1, 3, 4, 5, 12 -> [MASK]; 13 (11) -> random id 10.
    assert ids.tolist() == [1, 3, 20, 6, 3, 3, 22, 8, 2, 23, 9, 10, 3, 10, 12, 13, 14, 15, 16, 2]
    assert labels.tolist() == [_, 5, _, 6, 7, 21, _, _, _, _, _, _, 24, 11, _, _, _, _, _, _]
    check_invariants(HAND, ids, labels, SMALL)


def test_mask_whole_words_exact_under_seed_0():
    ids, labels = mask_whole_words(HAND, np.random.default_rng(0), SMALL, CONTINUATION)
    # Words 7 ##21 ##22, the orphan ##23, 11 and 14: 3 + 1 + 1 + 1 = 6 = budget.
    assert ids.tolist() == [1, 5, 20, 6, 3, 3, 22, 8, 2, 3, 9, 10, 24, 3, 12, 13, 2, 15, 16, 2]
    assert labels.tolist() == [_, _, _, _, 7, 21, 22, _, _, 23, _, _, _, 11, _, _, 14, _, _, _]
    check_invariants(HAND, ids, labels, SMALL)


def test_mask_spans_exact_under_seed_0():
    ids, labels = mask_spans(HAND, np.random.default_rng(0), SMALL, CONTINUATION)
    # A 4-word span "10 ##24 11 12 13" (5 tokens); the next span (1 word) starts on "7 ##21 ##22",
    # 3 tokens for the 1 left of the budget of 6, so masking stops (sample_spans rule 3).
    assert ids.tolist() == [1, 5, 20, 6, 7, 21, 22, 8, 2, 23, 9, 3, 3, 3, 3, 3, 14, 15, 16, 2]
    assert labels.tolist() == [_, _, _, _, _, _, _, _, _, _, _, 10, 24, 11, 12, 13, _, _, _, _]
    check_invariants(HAND, ids, labels, SMALL)


def test_words_of_the_hand_built_sequence():
    starts, ends, runs = _words(HAND, SMALL, CONTINUATION)
    assert starts.tolist() == [1, 3, 4, 7, 9, 10, 11, 13, 14, 15, 16, 17, 18]
    assert ends.tolist() == [3, 4, 7, 8, 10, 11, 13, 14, 15, 16, 17, 18, 19]
    assert runs.tolist() == [1] * 4 + [2] * 9


def random_rows(rng, n_rows, vocab_size=30000):
    """Rows with specials scattered (runs of them too), lengths 1..300."""
    rows = []
    for _ in range(n_rows):
        row = rng.integers(4, vocab_size, size=int(rng.integers(1, 300)))
        row[rng.random(len(row)) < 0.1] = rng.choice([PAD, CLS, SEP])
        rows.append(row)
    return rows


def test_special_tokens_are_never_masked_nor_labelled():
    rng = np.random.default_rng(1)
    config = MaskingConfig(
        vocab_size=30000, mask_id=MASK, special_ids=(PAD, CLS, SEP), masked_lm_prob=0.5
    )
    continuation = rng.random(30000) < 0.3
    maskers = [
        partial(mask_tokens, config=config),
        partial(mask_whole_words, config=config, continuation=continuation),
        partial(mask_spans, config=config, continuation=continuation),
    ]
    for tokens in random_rows(rng, 200):
        for mask in maskers:
            ids, labels = mask(tokens, rng)
            check_invariants(tokens, ids, labels, config)
            assert (labels != IGNORE_INDEX).sum() <= num_to_predict(len(tokens), config)


def test_bert_masking_rate_position_law_and_80_10_10_split():
    # 1000 rows x 128 = 128k tokens: [CLS] 62 [SEP] 63 [SEP], so 125 candidates and 19 predictions.
    V = 30000
    config = MaskingConfig(vocab_size=V, mask_id=MASK, special_ids=(PAD, CLS, SEP))
    rng = np.random.default_rng(2)
    tokens = rng.integers(4, V, size=(1000, 128))
    tokens[:, 0], tokens[:, 64], tokens[:, 127] = CLS, SEP, SEP
    out = [mask_tokens(row, rng, config) for row in tokens]
    ids = np.stack([o[0] for o in out])
    predicted = np.stack([o[1] for o in out]) != IGNORE_INDEX
    assert (predicted.sum(axis=1) == 19).all()  # the rate is exact per row
    # Every candidate position equally likely: Binomial(1000, 19/125) within 4.5 sigma each.
    per_position = predicted.sum(axis=0)[np.r_[1:64, 65:127]]
    p = 19 / 125
    assert np.abs(per_position - 1000 * p).max() < 4.5 * np.sqrt(1000 * p * (1 - p))
    # 80/10/10: seen as [MASK] 0.8 + 0.1/V, unchanged 0.1 + 0.1/V, other id 0.1 (V - 2) / V.
    n = predicted.sum()
    seen = ids[predicted]
    original = tokens[predicted]
    for count, prob in [
        ((seen == MASK).sum(), 0.8 + 0.1 / V),
        ((seen == original).sum(), 0.1 + 0.1 / V),
        (((seen != MASK) & (seen != original)).sum(), 0.1 * (V - 2) / V),
    ]:
        assert abs(count - n * prob) < 4 * np.sqrt(n * prob * (1 - prob))


def word_rows(rng, n_rows, n_words, vocab_size=1000):
    """[CLS] words [SEP] words [SEP]; word sizes 1..4, "##" ids are >= vocab_size // 2."""
    rows = []
    for _ in range(n_rows):
        row = [CLS]
        for k in range(n_words):
            row.append(int(rng.integers(4, vocab_size // 2)))
            row += rng.integers(vocab_size // 2, vocab_size, size=int(rng.integers(0, 4))).tolist()
            if k == n_words // 2:
                row.append(SEP)
        rows.append(np.array(row + [SEP]))
    return rows


def test_whole_word_masking_never_splits_a_word_and_fills_the_budget():
    rng = np.random.default_rng(3)
    config = MaskingConfig(vocab_size=1000, mask_id=MASK, special_ids=(PAD, CLS, SEP))
    continuation = np.arange(1000) >= 500
    total = 0
    for tokens in word_rows(rng, 500, 100):
        ids, labels = mask_whole_words(tokens, rng, config, continuation)
        check_invariants(tokens, ids, labels, config)
        starts, ends, _ = _words(tokens, config, continuation)
        running = np.concatenate(([0], np.cumsum(labels != IGNORE_INDEX)))
        labelled = running[ends] - running[starts]  # labelled pieces per word
        assert ((labelled == 0) | (labelled == ends - starts)).all()  # each word: all or none
        # With >= budget one-piece words the greedy skip always lands on the budget exactly.
        if ((ends - starts) == 1).sum() >= num_to_predict(len(tokens), config):
            assert (labels != IGNORE_INDEX).sum() == num_to_predict(len(tokens), config)
        total += len(tokens)
    assert total > 100_000


def test_span_length_pmf_is_the_clipped_geometric_with_mean_3_8():
    pmf = span_length_pmf(0.2, 10)
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf[1:] / pmf[:-1] == pytest.approx(np.full(9, 0.8))
    assert (pmf * np.arange(1, 11)).sum() == pytest.approx(3.7971, abs=1e-4)  # SpanBERT: 3.8


def test_span_lengths_follow_the_clipped_geometric_law():
    # 3000 rows of 200 one-piece words, budget 70. Spans 0..6 are always drawn (at most 60 words
    # taken before them), never cut by the budget, and always find room (some gap >= 20 words), so
    # their lengths are iid from the pmf. Later spans are not: the one that crosses the budget is
    # size-biased and cut. Chi-square with 9 dof: 33.7 is the 0.9999 quantile.
    rng = np.random.default_rng(4)
    lengths = []
    for _ in range(3000):
        spans = sample_spans(np.ones(200, int), np.zeros(200, int), 70, rng)
        lengths += [n for _, n in spans[:7]]
    counts = np.bincount(lengths, minlength=11)[1:]
    expected = len(lengths) * span_length_pmf()
    assert len(lengths) == 21_000 and counts.sum() == len(lengths)
    assert ((counts - expected) ** 2 / expected).sum() < 33.7
    sd = np.sqrt((span_length_pmf() * (np.arange(1, 11) - 3.797) ** 2).sum() / len(lengths))
    assert abs(np.mean(lengths) - 3.797) < 4 * sd


def test_spans_are_whole_words_inside_segments_with_one_decision_per_span():
    config = MaskingConfig(vocab_size=30000, mask_id=MASK, special_ids=(PAD, CLS, SEP))
    continuation = (np.arange(30000) >= 500) & (np.arange(30000) < 1000)
    for seed, tokens in enumerate(word_rows(np.random.default_rng(5), 300, 80)):
        ids, labels = mask_spans(tokens, np.random.default_rng(seed), config, continuation)
        check_invariants(tokens, ids, labels, config)
        # Replay the span choice: mask_spans draws the spans first from the same generator.
        starts, ends, runs = _words(tokens, config, continuation)
        budget = num_to_predict(len(tokens), config)
        spans = sample_spans(ends - starts, runs, budget, np.random.default_rng(seed))
        chosen = np.zeros(len(tokens), bool)
        sizes = [ends[first + n - 1] - starts[first] for first, n in spans]
        for first, n in spans:
            assert 1 <= n <= 10 and runs[first] == runs[first + n - 1]  # never crosses [SEP]
            lo, hi = starts[first], ends[first + n - 1]
            chosen[lo:hi] = True
            # One decision per span: all [MASK], all kept, or all random (none [MASK] or kept).
            n_mask = (ids[lo:hi] == MASK).sum()
            n_kept = (ids[lo:hi] == tokens[lo:hi]).sum()
            assert (n_mask, n_kept) in [(hi - lo, 0), (0, hi - lo), (0, 0)]
        assert (chosen == (labels != IGNORE_INDEX)).all()
        assert chosen.sum() == sum(sizes) <= budget  # spans are disjoint


def test_mask_batch_equals_masking_rows_one_at_a_time_and_ignores_padding():
    rng = np.random.default_rng(6)
    config = MaskingConfig(vocab_size=30000, mask_id=MASK, special_ids=(PAD, CLS, SEP))
    rows = [np.concatenate(([CLS], rng.integers(4, 30000, size=n), [SEP])) for n in (5, 30, 17)]
    batch = torch.zeros(3, 40, dtype=torch.int64)  # pad_id 0, and 8 columns more than needed
    for r, row in enumerate(rows):
        batch[r, : len(row)] = torch.from_numpy(row)
    before = batch.clone()
    mask_row = partial(mask_tokens, config=config)
    ids, labels = mask_batch(batch, np.random.default_rng(0), pad_id=PAD, mask_row=mask_row)
    assert torch.equal(batch, before)
    one_at_a_time = np.random.default_rng(0)
    for r, row in enumerate(rows):
        want_ids, want_labels = mask_row(row, one_at_a_time)
        assert ids[r, : len(row)].tolist() == want_ids.tolist()
        assert labels[r, : len(row)].tolist() == want_labels.tolist()
        assert (ids[r, len(row) :] == PAD).all() and (labels[r, len(row) :] == IGNORE_INDEX).all()
    # Less padding, same masks.
    ids32, labels32 = mask_batch(
        batch[:, :32], np.random.default_rng(0), pad_id=PAD, mask_row=mask_row
    )
    assert torch.equal(ids32, ids[:, :32]) and torch.equal(labels32, labels[:, :32])


def test_mask_batch_refuses_left_padding():
    config = MaskingConfig(vocab_size=30, mask_id=MASK, special_ids=(PAD, CLS, SEP))
    batch = torch.tensor([[PAD, CLS, 5, SEP]])
    with pytest.raises(ValueError, match="right padding"):
        mask_batch(
            batch,
            np.random.default_rng(0),
            pad_id=PAD,
            mask_row=partial(mask_tokens, config=config),
        )
