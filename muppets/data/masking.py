"""Masked-LM corruption: BERT 80/10/10, whole-word, SpanBERT spans, and batch-time dynamic masking.

Every row masker takes one sequence of ids (special tokens included, no padding) and a
`numpy.random.Generator`, and returns new `(input_ids, labels)` int64 arrays of the same length:
`labels` hold the original id where the model must predict, IGNORE_INDEX elsewhere. Special tokens
are never chosen. `mask_batch` applies a row masker to every row of a right-padded batch, so static
masking (instance time, BERT) and dynamic masking (batch time, RoBERTa) share one implementation.

Sources: Devlin et al. 2019 §3.1 "Task #1: Masked LM" and appendix A.1; google-research/bert
create_pretraining_data.py, create_masked_lm_predictions (the reference behaviour); Joshi et al.
2020 (SpanBERT) §3.1; Liu et al. 2019 (RoBERTa) §4.1 "Static vs. Dynamic Masking".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from muppets.errors import ConfigError

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
MASK_PROB = 0.8  # a chosen position becomes [MASK] ...
KEEP_PROB = 0.1  # ... stays unchanged; the remaining 10% become a random id (Devlin et al. §3.1)

RowMasker = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MaskingConfig:
    """What every masker needs; field names follow google's flags (create_pretraining_data.py)."""

    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]  # [CLS], [SEP], [PAD], ...: never chosen, never labelled
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int | None = None  # google: 20 at length 128; None = no cap

    def __post_init__(self) -> None:
        object.__setattr__(self, "special_ids", tuple(int(i) for i in self.special_ids))
        if self.vocab_size < 1:
            raise ConfigError(f"vocab_size must be >= 1, got {self.vocab_size}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ConfigError(f"mask_id must be in [0, vocab_size), got {self.mask_id}")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ConfigError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.max_predictions_per_seq is not None and self.max_predictions_per_seq < 1:
            raise ConfigError(
                f"max_predictions_per_seq must be >= 1 or None, got {self.max_predictions_per_seq}"
            )


def num_to_predict(num_tokens: int, config: MaskingConfig) -> int:
    """create_masked_lm_predictions: min(max_predictions_per_seq, max(1, round(len * prob))).

    `num_tokens` counts the special tokens too, as google's `len(tokens)` does. Python's round
    (half to even) is what google's code runs under Python 3.
    """
    budget = max(1, int(round(num_tokens * config.masked_lm_prob)))
    cap = config.max_predictions_per_seq
    return budget if cap is None else min(cap, budget)


def _as_ids(tokens: np.ndarray) -> np.ndarray:
    return np.asarray(tokens, dtype=np.int64)  # shards store uint16; never written to


def _candidates(tokens: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """(T,) bool: positions that may be predicted (google: everything but [CLS] and [SEP])."""
    return ~np.isin(tokens, config.special_ids)


def _replace(
    tokens: np.ndarray,
    chosen: np.ndarray,
    decision: np.ndarray,
    rng: np.random.Generator,
    config: MaskingConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """80/10/10 at the chosen positions, from one uniform `decision` per position.

    google draws rng.random() < 0.8 for [MASK], then another < 0.5 for keep vs random; one uniform
    cut at 0.8 and 0.9 gives the same law. A span shares one decision (SpanBERT §3.1). The random id
    is uniform over the whole vocabulary, specials included (google: vocab_words[randint(...)]).
    """
    random_ids = rng.integers(0, config.vocab_size, size=tokens.shape)
    replaced = np.where(decision < MASK_PROB + KEEP_PROB, tokens, random_ids)
    replaced = np.where(decision < MASK_PROB, config.mask_id, replaced)
    input_ids = np.where(chosen, replaced, tokens).astype(np.int64)
    labels = np.where(chosen, tokens, IGNORE_INDEX).astype(np.int64)
    return input_ids, labels


def mask_tokens(
    tokens: np.ndarray, rng: np.random.Generator, config: MaskingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: shuffle the candidate positions, predict the first num_to_predict of them."""
    tokens = _as_ids(tokens)
    positions = np.flatnonzero(_candidates(tokens, config))
    chosen = np.zeros(len(tokens), dtype=bool)
    chosen[rng.permutation(positions)[: num_to_predict(len(tokens), config)]] = True
    return _replace(tokens, chosen, rng.random(len(tokens)), rng, config)


def _words(
    tokens: np.ndarray, config: MaskingConfig, continuation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole words among the candidates: a start piece and the continuation pieces right after
    it (the tokenizer's continuation_mask: WordPiece's "##" pieces; byte-level BPE's and
    SentencePiece's pieces without the "Ġ" / "▁" word-start marker).

    Returns (starts, ends, runs), each (W,): word w covers tokens[starts[w]:ends[w]] and lies in
    the special-free stretch number runs[w]. A "##" piece right after a special token starts a word
    of its own (google would glue it onto the word before the special token).
    """
    candidate = _candidates(tokens, config)
    follows_candidate = np.concatenate(([False], candidate[:-1]))
    is_start = candidate & ~(continuation[tokens] & follows_candidate)
    starts = np.flatnonzero(is_start)
    # A word ends at the next start, the next special token or the end of the sequence.
    boundaries = np.flatnonzero(np.append(is_start[1:] | ~candidate[1:], True)) + 1
    ends = boundaries[np.searchsorted(boundaries, starts, side="right")]
    runs = np.cumsum(~candidate)[starts]
    return starts, ends, runs


def mask_whole_words(
    tokens: np.ndarray, rng: np.random.Generator, config: MaskingConfig, continuation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-word masking (google's do_whole_word_mask): all pieces of a chosen word together.

    `continuation` is (vocab_size,) bool, True for pieces that continue a word. Words are taken in
    random order; a word that would push the count past num_to_predict is skipped, and smaller
    ones after it may still fit (google: `if len(masked_lms) + len(index_set) > num_to_predict:
    continue`). The 80/10/10 choice is made per piece, as google does.
    """
    tokens = _as_ids(tokens)
    starts, ends, _ = _words(tokens, config, continuation)
    budget = num_to_predict(len(tokens), config)
    chosen = np.zeros(len(tokens), dtype=bool)
    used = 0
    for w in rng.permutation(len(starts)):
        if used >= budget:
            break
        size = int(ends[w] - starts[w])
        if used + size > budget:
            continue
        chosen[starts[w] : ends[w]] = True
        used += size
    return _replace(tokens, chosen, rng.random(len(tokens)), rng, config)


def span_length_pmf(p: float = 0.2, max_span_words: int = 10) -> np.ndarray:
    """(max_span_words,) P(length = 1..max): Geometric(p) clipped and renormalised (mean 3.8).

    SpanBERT §3.1 "l ~ Geo(p) ... p = 0.2 ... clip l at l_max = 10"; SpanBERT's code
    (fairseq/data/masking.py) renormalises p(1-p)^(l-1) over 1..l_max rather than piling the tail
    on l_max, and so do we: mean = 3.797 words at p = 0.2.
    """
    weights = p * (1.0 - p) ** np.arange(max_span_words)
    return weights / weights.sum()


def sample_spans(
    word_sizes: np.ndarray,
    word_runs: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    *,
    p: float = 0.2,
    max_span_words: int = 10,
) -> list[tuple[int, int]]:
    """SpanBERT span selection over words; returns (first_word, num_words) in the order drawn.

    Our exact rules (SpanBERT §3.1 leaves them open):
    1. Draw l from span_length_pmf; a span never overlaps an earlier one and never crosses a special
       token (words with different `word_runs`). If no free stretch of l words exists, l shrinks to
       the longest free stretch, so the law is exact while room is plentiful.
    2. The first word is uniform over the words where l free words fit (SpanBERT draws a token and
       moves to its word's start, which favours long words).
    3. Repeat until `budget` tokens are taken. The span that crosses the budget keeps only its
       leading complete words (SpanBERT cuts mid-word); if not even its first word fits, stop.
    """
    index = np.arange(len(word_sizes))
    cdf = np.cumsum(span_length_pmf(p, max_span_words))
    run_start = np.searchsorted(word_runs, word_runs, side="left")  # first word of w's stretch
    free = np.searchsorted(word_runs, word_runs, side="right") - index  # free words from w on
    spans: list[tuple[int, int]] = []
    used = 0
    while used < budget and len(free) and (longest := int(free.max())) > 0:
        drawn = int(np.searchsorted(cdf, rng.random(), side="right")) + 1  # inverse cdf
        length = min(drawn, max_span_words, longest)  # max_span_words: cdf[-1] < 1 by ulps
        fits = np.flatnonzero(free >= length)
        first = int(fits[rng.integers(len(fits))])
        cumulative = np.cumsum(word_sizes[first : first + length])
        keep = int(np.searchsorted(cumulative, budget - used, side="right"))
        if keep == 0:
            break
        # Take the words; free stretches that ran into them now end at `first`.
        free[first : first + keep] = 0
        lo = run_start[first]
        free[lo:first] = np.minimum(free[lo:first], first - index[lo:first])
        used += int(cumulative[keep - 1])
        spans.append((first, keep))
    return spans


def mask_spans(
    tokens: np.ndarray,
    rng: np.random.Generator,
    config: MaskingConfig,
    continuation: np.ndarray,
    *,
    p: float = 0.2,
    max_span_words: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """SpanBERT masking: spans of whole words (sample_spans), 80/10/10 decided once per span.

    The budget is num_to_predict (BERT's rounding and cap; SpanBERT's code uses ceil(len * 0.15)).
    In a "random" span every token gets its own random id (SpanBERT's span_masking).
    """
    tokens = _as_ids(tokens)
    starts, ends, runs = _words(tokens, config, continuation)
    budget = num_to_predict(len(tokens), config)
    spans = sample_spans(ends - starts, runs, budget, rng, p=p, max_span_words=max_span_words)
    chosen = np.zeros(len(tokens), dtype=bool)
    decision = np.ones(len(tokens))  # only read where chosen
    for (first, num_words), u in zip(spans, rng.random(len(spans)), strict=True):
        lo, hi = starts[first], ends[first + num_words - 1]
        chosen[lo:hi] = True
        decision[lo:hi] = u
    return _replace(tokens, chosen, decision, rng, config)


def mask_batch(
    input_ids: torch.Tensor, rng: np.random.Generator, *, pad_id: int, mask_row: RowMasker
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic masking (RoBERTa §4.1): a fresh mask for every row of a right-padded (B, T) batch.

    `mask_row` is one of the maskers above with its config bound, e.g.
    `functools.partial(mask_tokens, config=config)`. Each row is masked on its unpadded ids, so
    padding is never touched and the masks do not depend on how much padding the batch carries:
    masking a batch equals masking its rows one at a time with the same generator.
    Returns (input_ids, labels), both (B, T) int64 on the input's device.
    """
    ids = input_ids.detach().cpu().numpy()  # (B, T); read only
    is_token = ids != pad_id
    lengths = is_token.sum(axis=1)  # (B,)
    if not np.array_equal(is_token, np.arange(ids.shape[1]) < lengths[:, None]):
        raise ValueError("mask_batch expects right padding: pad_id only after the last token")
    masked = ids.astype(np.int64)  # a copy
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    for row, n in enumerate(lengths):
        masked[row, :n], labels[row, :n] = mask_row(ids[row, :n], rng)
    device = input_ids.device
    return torch.from_numpy(masked).to(device), torch.from_numpy(labels).to(device)
