"""ALBERT's n-gram masking: whole words in n-grams of up to 3 words, short n-grams favoured.

Lan et al. 2020 (https://arxiv.org/abs/1909.11942) section 4.1: "we use n-gram masking with the
length of each n-gram mask selected randomly ... p(n) = (1/n) / sum_k (1/k)", n <= 3; the reference
is google-research/albert create_pretraining_data.py, create_masked_lm_predictions (with
--do_whole_word_mask, --ngram 3, --favor_shorter_ngram). Its behaviour, kept here:
  1. every candidate word is a possible n-gram start, visited in random order;
  2. n is drawn with p(n) proportional to 1/n (6/11, 3/11, 2/11 for n <= 3);
  3. while the n-gram would push the count past num_to_predict, n shrinks (n-1, ..., 1); an
     n-gram that still does not fit is skipped, as is one touching an already masked word;
  4. 80/10/10 is decided per token, not per n-gram (unlike SpanBERT's per-span choice).
One difference: google's n-grams run over the candidate list and so may cross [SEP] (words of
both segments in one n-gram); here an n-gram stops at a special token, as SpanBERT's spans do.

Shapes: T tokens in the row, W words among them.
"""

from __future__ import annotations

import numpy as np

from muppets.data.masking import MaskingConfig, _as_ids, _replace, _words, num_to_predict

MAX_NGRAM = 3  # google-research/albert: --ngram 3


def ngram_length_pmf(max_ngram: int = MAX_NGRAM) -> np.ndarray:
    """(max_ngram,) P(n = 1..max_ngram) proportional to 1/n (--favor_shorter_ngram)."""
    weights = 1.0 / np.arange(1, max_ngram + 1)
    return weights / weights.sum()


def sample_ngrams(
    word_sizes: np.ndarray,
    word_runs: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    max_ngram: int = MAX_NGRAM,
) -> list[tuple[int, int, int]]:
    """(first_word, words taken, n drawn) of each n-gram masked, in the order taken.

    word_sizes: (W,) tokens per word; word_runs: (W,) the special-free stretch of each word (an
    n-gram never leaves its stretch: it is clipped there); budget: tokens to predict.
    """
    W = len(word_sizes)
    cdf = np.cumsum(ngram_length_pmf(max_ngram))
    # words from w to the end of w's stretch (how long an n-gram starting at w may be)
    room = np.searchsorted(word_runs, word_runs, side="right") - np.arange(W)
    covered = np.zeros(W, dtype=bool)
    taken: list[tuple[int, int, int]] = []
    used = 0
    for w in rng.permutation(W):
        if used >= budget:
            break
        drawn = min(int(np.searchsorted(cdf, rng.random(), side="right")) + 1, max_ngram)
        sizes = np.cumsum(word_sizes[w : w + min(drawn, int(room[w]))])  # tokens of 1..n words
        n = len(sizes)
        while n > 1 and used + sizes[n - 1] > budget:  # shorter n-grams when over budget
            n -= 1
        if used + sizes[n - 1] > budget or covered[w : w + n].any():
            continue
        covered[w : w + n] = True
        used += int(sizes[n - 1])
        taken.append((int(w), n, drawn))
    return taken


def mask_ngrams(
    tokens: np.ndarray,
    rng: np.random.Generator,
    config: MaskingConfig,
    continuation: np.ndarray,
    *,
    max_ngram: int = MAX_NGRAM,
) -> tuple[np.ndarray, np.ndarray]:
    """ALBERT masking of one row: n-grams of whole words (sample_ngrams) up to num_to_predict
    tokens, then 80/10/10 per token. `continuation`: (vocab_size,) bool, True for pieces that
    continue a word ("##" pieces; byte-level BPE and SentencePiece pieces without "Ġ" / "▁")."""
    tokens = _as_ids(tokens)
    starts, ends, runs = _words(tokens, config, continuation)
    budget = num_to_predict(len(tokens), config)
    chosen = np.zeros(len(tokens), dtype=bool)
    for first, n, _ in sample_ngrams(ends - starts, runs, budget, rng, max_ngram):
        chosen[starts[first] : ends[first + n - 1]] = True
    return _replace(tokens, chosen, rng.random(len(tokens)), rng, config)
