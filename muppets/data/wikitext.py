"""WikiText `.tokens` files as one LM stream, with what per-word perplexity needs.

As kimiyoung/transformer-xl pytorch/utils/vocabulary.py, Vocab.encode_file(ordered=True,
add_eos=True) for wt103: every line, blank ones included, is its whitespace-separated words
followed by <eos>, and the lines follow each other in file order. The reference's perplexity
counts those symbols (words and one <eos> per line). Here each line goes whole through the
model's tokenizer (word pieces) and `eos_id` follows it; `word_start` marks the first piece of
every word and every eos, so that a perplexity over the predicted pieces converts to words:

    per-piece ppl = exp(NLL / predicted pieces)
    per-word ppl  = exp(NLL / word_start[predicted].sum())     (all pieces of those words)

A piece of spaces only (byte-level BPE's space at the start of a line) belongs to the word or
eos before it. A word that the tokenizer turns into no piece at all (an unknown character
dropped by the normalizer) cannot be scored; such words are counted in `dropped_words`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muppets.data.lm_streams import ArrayStream
from muppets.errors import InputError


@dataclass
class WikiTextStream:
    stream: ArrayStream  # ids of every line's pieces, then eos
    word_start: np.ndarray  # (N,) bool: the piece starts a word (eos counts as a word)
    words: int  # words and eos symbols of the file: the reference's token count
    dropped_words: int  # words without any piece


def _word_of_char(line: str) -> np.ndarray:
    """(len(line),) index of the whitespace-separated word each character is in (-1: space)."""
    is_space = np.array([c.isspace() for c in line], dtype=bool)
    starts = ~is_space & np.concatenate([[True], is_space[:-1]]) if len(line) else is_space
    return np.where(is_space, -1, np.cumsum(starts) - 1)


def read_wikitext(path: str | Path, tokenizer, eos_id: int) -> WikiTextStream:
    """The stream of one `.tokens` file (module docstring). `tokenizer`: a muppets tokenizer
    (tokenization/backend.py); lines are encoded whole, in context (byte-level BPE marks the
    space before a word), and a piece starts a word when its first character is in a word that
    no earlier piece of the line is in."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the WikiText file: {e}", path) from None
    encodings = tokenizer.backend.encode_batch(lines, add_special_tokens=False)
    ids: list[int] = []
    starts: list[bool] = []
    words = dropped = 0
    for line, encoding in zip(lines, encodings, strict=True):
        word_of = _word_of_char(line)
        n_words = int(word_of.max()) + 1 if len(line) else 0
        seen, found = -1, 0  # last word reached; words that got a piece
        for piece, (begin, end) in zip(encoding.ids, encoding.offsets, strict=True):
            # the word of the piece's first non-space character (byte-level pieces carry the space)
            inside = word_of[begin:end]
            inside = inside[inside >= 0]
            word = int(inside[0]) if len(inside) else seen
            ids.append(piece)
            starts.append(word > seen)
            found += word > seen
            seen = max(seen, word)
        dropped += n_words - found
        words += n_words + 1  # and the line's eos
        ids.append(eos_id)
        starts.append(True)
    if words == len(lines):
        raise InputError("no words in the WikiText file", path)
    return WikiTextStream(
        stream=ArrayStream(np.array(ids, dtype=np.int64)),
        word_start=np.array(starts, dtype=bool),
        words=words,
        dropped_words=dropped,
    )
