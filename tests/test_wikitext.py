"""WikiText streams: every line's pieces then eos, word starts exact for WordPiece (words apart)
and byte-level BPE (words in context), the reference's word count, per-word counting."""

from pathlib import Path

import numpy as np
import pytest

from muppets.data.lm_streams import OrderedSegments
from muppets.data.wikitext import read_wikitext
from muppets.errors import InputError
from muppets.tokenization.bpe import train_bpe
from muppets.tokenization.wordpiece import train_wordpiece

EOS = 999_999  # no piece has this id
LINES = [" ", " = The cat = ", " ", " the cat sat @-@ on the mat . ", " a dog ran ", ""]
EVAL = Path(__file__).resolve().parents[2] / "shared/data/wikitext-103-eval/wiki.valid.tokens"


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    path = tmp_path_factory.mktemp("wt") / "wiki.valid.tokens"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def groups(ids: np.ndarray, starts: np.ndarray) -> list[list[int]]:
    """The pieces of each word (and each eos), split at word starts."""
    cuts = np.flatnonzero(starts)
    return [ids[a:b].tolist() for a, b in zip(cuts, [*cuts[1:], len(ids)], strict=True)]


def test_wordpiece_words_and_eos(wikitext, tiny_corpus):
    tokenizer = train_wordpiece(tiny_corpus, vocab_size=60, min_frequency=1)
    read = read_wikitext(wikitext, tokenizer, EOS)
    want = []
    for line in LINES:
        want += [tokenizer.encode(word) for word in line.split()] + [[EOS]]
    assert groups(read.stream.ids, read.word_start) == want
    assert read.words == sum(len(line.split()) + 1 for line in LINES) == 21
    assert read.dropped_words == 0


def test_byte_level_bpe_words_in_context(wikitext, tiny_corpus):
    tokenizer = train_bpe([*tiny_corpus, *LINES], vocab_size=300, min_frequency=1)
    read = read_wikitext(wikitext, tokenizer, EOS)
    words = []
    for line in LINES:
        words += [*line.split(), None]
    got = groups(read.stream.ids, read.word_start)
    assert len(got) == len(words)
    for pieces, word in zip(got, words, strict=True):
        if word is None:  # eos, and the spaces that start the next line if any
            assert pieces[0] == EOS and tokenizer.decode(pieces[1:]).strip() == ""
        else:  # the pieces of a word, with the space before it that byte-level BPE keeps
            assert tokenizer.decode(pieces).strip() == word
    # in context, not word by word: " cat" is not "cat"
    line = tokenizer.backend.encode(LINES[3], add_special_tokens=False).ids
    start = np.flatnonzero(read.stream.ids == EOS)[2] + 1  # after the third line's eos
    assert read.stream.ids[start : start + len(line) + 1].tolist() == [*line, EOS]


def test_predicted_words_for_a_per_word_perplexity(wikitext, tiny_corpus):
    tokenizer = train_wordpiece(tiny_corpus, vocab_size=60, min_frequency=1)
    read = read_wikitext(wikitext, tokenizer, EOS)
    one_row = OrderedSegments(read.stream, batch_size=1, tgt_len=4)
    predicted = one_row.predicted()
    assert predicted.sum() == len(read.stream) - 1  # all but the first piece
    assert read.word_start[predicted].sum() == read.words - 1
    two = OrderedSegments(read.stream, batch_size=2, tgt_len=4, rank=1, world_size=2)
    n = two.n_step
    assert np.flatnonzero(two.predicted()).tolist() == list(range(n + 1, 2 * n))


def test_empty_file(tmp_path, tiny_corpus):
    path = tmp_path / "empty.tokens"
    path.write_text(" \n\n", encoding="utf-8")
    tokenizer = train_wordpiece(tiny_corpus, vocab_size=60, min_frequency=1)
    with pytest.raises(InputError, match="no words"):
        read_wikitext(path, tokenizer, EOS)
    with pytest.raises(InputError, match="cannot read"):
        read_wikitext(tmp_path / "missing.tokens", tokenizer, EOS)


@pytest.mark.skipif(not EVAL.is_file(), reason="the shared WikiText-103 eval files are not here")
def test_the_shared_valid_file_counts_as_the_reference(tmp_path, tiny_corpus):
    lines = EVAL.read_text(encoding="utf-8").splitlines()[:400]
    path = tmp_path / "head.tokens"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = train_wordpiece(tiny_corpus + lines, vocab_size=400, min_frequency=1)
    read = read_wikitext(path, tokenizer, EOS)
    assert read.words == sum(len(line.split()) + 1 for line in lines)
    assert int(read.word_start.sum()) == read.words - read.dropped_words
    assert (read.stream.ids == EOS).sum() == len(lines)
