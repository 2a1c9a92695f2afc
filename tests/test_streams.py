"""ELMo LM streams: words, windows and their targets, coverage per epoch and per rank, resume."""

import math

import pytest
import torch

from muppets.data.streams import (
    IGNORE,
    StreamStats,
    WindowBatches,
    corpus_sentences,
    count_words,
    evaluation_windows,
    stream_windows,
    tokenize_words,
)
from muppets.errors import ConfigError
from muppets.tokenization.characters import word_to_char_ids
from muppets.tokenization.words import build_word_vocabulary

LONG = "x" * 60  # longer than the 48 bytes a token keeps

TEXT = f"""The cat sat on the mat. It was happy.
Dogs don't like cats, e.g. the U.S. ones.

A second document with 3.14 and 1,000 numbers. {LONG} ends here.
\u200b
Short one.
"""


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return [str(path)]


def stream_tokens(inputs) -> list[str]:
    """The epoch's token stream, written out by hand from the sentences."""
    tokens = []
    for words in corpus_sentences(inputs):
        tokens += ["<S>", *words, "</S>"]
    return tokens


def test_words_are_moses_like():
    text = "I don't know, e.g. the U.S. paid $1,000.50 for 3.14 well-known 'toys'... ok?"
    # one token per space: the expected tokens hold no spaces
    expected = "I don 't know , e.g. the U.S. paid $ 1,000.50 for 3.14 well-known ' toys ' ... ok ?"
    assert tokenize_words(text) == expected.split()
    assert tokenize_words("\u200b\u00ad") == []  # invisible characters only: no word


def test_empty_sentences_are_skipped_and_counted(corpus):
    stats = StreamStats()
    sentences = list(corpus_sentences(corpus, stats=stats))
    assert stats.empty_sentences == 1 and stats.first_empty == f"{corpus[0]}:5"
    assert stats.sentences == len(sentences) == 6 and stats.documents == 2
    assert stats.tokens == stats.words + 2 * stats.sentences == sum(len(s) + 2 for s in sentences)


def test_windows_and_targets_follow_the_stream(corpus):
    tokens = stream_tokens(corpus)
    vocabulary = build_word_vocabulary(count_words(corpus_sentences(corpus)))
    ids = [vocabulary.token_to_id(t) for t in tokens]
    windows = list(stream_windows(corpus_sentences(corpus), 7))
    assert len(windows) == math.ceil(len(tokens) / 7)
    assert [t for w in windows for t in w.tokens] == tokens
    source = WindowBatches(corpus, vocabulary, window=7, batch_size=len(windows))
    batch = next(source)
    mask = batch["attention_mask"]
    assert batch["char_ids"].shape == (len(windows), 7, 50)
    assert batch["word_ids"][mask].tolist() == ids
    assert batch["forward_targets"][mask].tolist() == ids[1:] + [IGNORE]  # next token
    assert batch["backward_targets"][mask].tolist() == [IGNORE] + ids[:-1]  # previous token
    assert (batch["forward_targets"][~mask] == IGNORE).all()
    assert (batch["char_ids"][~mask] == 0).all() and (batch["word_ids"][~mask] == 0).all()
    long_at = tokens.index(LONG)
    assert batch["char_ids"][mask][long_at].tolist() == word_to_char_ids(LONG)  # cut, no error
    assert batch["char_ids"][mask][0].tolist() == word_to_char_ids("<S>")


def windows_of(batch, vocabulary) -> list[list[str]]:
    """The token rows of a batch; padding rows are []."""
    return [
        [vocabulary.id_to_token(i) for i in row[keep].tolist()]
        for row, keep in zip(batch["word_ids"], batch["attention_mask"], strict=True)
    ]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_epoch_covers_the_text_once_split_across_ranks(corpus, world):
    tokens = stream_tokens(corpus)
    vocabulary = build_word_vocabulary(count_words(corpus_sentences(corpus)))
    window, B = 4, 2
    n_windows = math.ceil(len(tokens) / window)
    per_epoch = math.ceil(n_windows / (world * B))  # batches per epoch, the same on every rank
    sources = [
        WindowBatches(corpus, vocabulary, window=window, batch_size=B, rank=r, world_size=world)
        for r in range(world)
    ]
    for epoch in range(2):
        rows = []  # global order: batch, then rank, then row
        for _ in range(per_epoch):
            for source in sources:
                assert source.state_dict()["epoch"] == epoch
                rows += windows_of(next(source), vocabulary)
        assert [t for row in rows for t in row] == tokens  # in order, exactly once, all ranks
        assert len(rows) == per_epoch * world * B  # the end is filled with empty rows
    assert all(s.state_dict() == {"epoch": 2, "windows": 0} for s in sources)


def test_evaluation_windows_split_across_ranks(corpus):
    vocabulary = build_word_vocabulary(count_words(corpus_sentences(corpus)))
    whole = evaluation_windows(corpus, vocabulary, window=5, batch_size=2)
    parts = [
        evaluation_windows(corpus, vocabulary, window=5, batch_size=2, rank=r, world_size=2)
        for r in range(2)
    ]
    assert len(parts[0]) + len(parts[1]) == len(whole)
    for i, batch in enumerate(whole):
        assert torch.equal(batch["word_ids"], parts[i % 2][i // 2]["word_ids"])
    rows = [row for batch in whole for row in windows_of(batch, vocabulary)]
    assert [t for row in rows for t in row] == stream_tokens(corpus)
    first = evaluation_windows(corpus, vocabulary, window=5, batch_size=2, max_windows=3)
    assert [b["word_ids"].shape[0] for b in first] == [2, 1]


def test_shuffling_permutes_windows_within_blocks(corpus):
    vocabulary = build_word_vocabulary(count_words(corpus_sentences(corpus)))
    plain = [w.tokens for w in stream_windows(corpus_sentences(corpus), 3)]
    source = WindowBatches(corpus, vocabulary, window=3, batch_size=1, shuffle_windows=4, seed=7)
    epochs = [[windows_of(next(source), vocabulary)[0] for _ in plain] for _ in range(2)]
    for rows in epochs:
        assert rows != plain
        for start in range(0, len(plain), 4):  # the same windows in every block, moved about
            assert sorted(rows[start : start + 4]) == sorted(plain[start : start + 4])
    assert epochs[0] != epochs[1]  # a new order every epoch


@pytest.mark.parametrize("stop", ["inside", "at_end", "next_epoch"])
def test_resume_is_exact(corpus, stop):
    vocabulary = build_word_vocabulary(count_words(corpus_sentences(corpus)))
    n_windows = math.ceil(len(stream_tokens(corpus)) / 3)
    per_epoch = math.ceil(n_windows / 4)

    def make():
        return WindowBatches(
            corpus, vocabulary, window=3, batch_size=2, shuffle_windows=5, seed=1, world_size=2
        )

    uninterrupted = make()
    expected = [next(uninterrupted) for _ in range(2 * per_epoch + 1)]
    done = {"inside": 2, "at_end": per_epoch, "next_epoch": per_epoch + 2}[stop]
    first = make()
    for _ in range(done):
        next(first)
    state = {"inside": (0, 8), "at_end": (1, 0), "next_epoch": (1, 8)}[stop]
    assert first.state_dict() == {"epoch": state[0], "windows": state[1]}
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    for batch in expected[done:]:
        got = next(resumed)
        assert all(torch.equal(got[key], batch[key]) for key in batch)


def test_bad_arguments(corpus):
    vocabulary = build_word_vocabulary({"a": 1})
    with pytest.raises(ConfigError, match="window"):
        WindowBatches(corpus, vocabulary, window=0)
    with pytest.raises(ConfigError, match="rank 2"):
        WindowBatches(corpus, vocabulary, rank=2, world_size=2)
