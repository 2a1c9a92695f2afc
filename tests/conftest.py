"""Fixtures shared by several test files."""

import pytest

from muppets.tokenization.wordpiece import train_wordpiece

# Three short sentences, repeated so that every word (and its pieces) passes min_frequency.
TINY_CORPUS = ["the cat sat on the mat .", "a dog ran in the park .", "the sun is hot ."] * 20


@pytest.fixture(scope="module")
def tiny_corpus() -> list[str]:
    return list(TINY_CORPUS)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_corpus):
    """A 60-token WordPiece trained on the tiny corpus: for tiny random checkpoints."""
    return train_wordpiece(tiny_corpus, vocab_size=60, min_frequency=1)
