"""What a model scores by learning nothing but token frequencies: the floor a pretraining run must
leave, drawn beside its held-out loss so a reader sees whether it did.

The unigram baseline predicts every masked token from the training corpus's token frequencies
(add-one smoothed, so no held-out token has probability 0), whatever its context. Scored on the
exact held-out targets a run evaluates on (recipes.pretrain.held_out_batches: the same config, seed
and masks), its loss is directly comparable to the run's held-out MLM loss. A bert-tiny stuck at
this loss has learnt the unigram distribution and nothing else (issue 12: 6.65 after 4 minutes).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def unigram_counts(token_arrays: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Occurrences of every id in the arrays (e.g. the training shards' tokens), as float64."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for tokens in token_arrays:
        counts += np.bincount(np.asarray(tokens, dtype=np.int64).ravel(), minlength=vocab_size)
    return counts


def unigram_baseline(counts: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """{"loss", "accuracy", "targets"} of predicting each target id from add-one smoothed
    `counts`: loss is the mean negative log-probability (nats, as the MLM loss), accuracy the
    share of targets equal to the most frequent id (the first on a tie, as argmax)."""
    targets = np.asarray(targets, dtype=np.int64).ravel()
    if targets.size == 0:
        raise ValueError("unigram_baseline needs at least one target")
    smoothed = np.asarray(counts, dtype=np.float64) + 1.0  # add-one (Laplace) smoothing
    log_p = np.log(smoothed / smoothed.sum())
    return {
        "loss": float(-log_p[targets].mean()),
        "accuracy": float((targets == int(np.argmax(smoothed))).mean()),
        "targets": int(targets.size),
    }
