"""The unigram baseline on hand-built counts: the numbers a smoothing or averaging bug changes."""

import math

import numpy as np
import pytest

from muppets.tasks.baselines import unigram_baseline, unigram_counts


def test_counts_add_up_over_arrays_and_keep_unseen_ids_at_zero():
    counts = unigram_counts([np.array([0, 1, 1]), np.array([[2], [1]])], vocab_size=5)
    assert counts.tolist() == [1.0, 3.0, 1.0, 0.0, 0.0]


def test_the_baseline_is_the_add_one_smoothed_unigram_loss():
    counts = np.array([1.0, 3.0, 1.0, 0.0])  # smoothed: 2, 4, 2, 1 of 9
    result = unigram_baseline(counts, np.array([1, 3, 1, 0]))
    expected = -(2 * math.log(4 / 9) + math.log(1 / 9) + math.log(2 / 9)) / 4
    assert result["loss"] == pytest.approx(expected, rel=1e-12)
    assert result["loss"] == pytest.approx(1.3308, abs=1e-4)
    assert result["accuracy"] == 0.5  # id 1, the most frequent, is 2 of the 4 targets
    assert result["targets"] == 4
    # An id never seen in training still has a finite loss (1 of 9), never infinity.
    assert unigram_baseline(counts, np.array([3]))["loss"] == pytest.approx(math.log(9))
    with pytest.raises(ValueError):
        unigram_baseline(counts, np.array([], dtype=np.int64))
