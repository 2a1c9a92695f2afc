"""Universal Dependencies CoNLL-U files -> sentences of (words, UPOS tags), for POS tagging.

Format (universaldependencies.org/format.html): one word per line with 10 tab-separated
columns `ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`, `#` comment lines before each
sentence, a blank line after it. Two kinds of line are not syntactic words and are skipped, as
the UD evaluation script (conll18_ud_eval.py) tags only words: multiword token ranges (`1-2
du`, the surface form of "de le") and empty nodes (`5.1`, enhanced dependencies only). Word IDs
must run 1, 2, 3, ... in each sentence. A line with another number of columns, an ID that is
none of the three forms, a word out of sequence or a tag that is not one of the 17 universal
POS tags raises `InputError` at its file and line. `.gz` files are read decompressed.
"""

from __future__ import annotations

import re
from pathlib import Path

from muppets.data.readers.conll import Sentence
from muppets.data.text import ReadStats, check_errors_policy, read_lines
from muppets.errors import InputError

# The 17 universal POS tags (universaldependencies.org/u/pos/), in the order of that page.
UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
_RANGE = re.compile(r"^[1-9][0-9]*-[1-9][0-9]*$")
_EMPTY = re.compile(r"^[0-9]+\.[1-9][0-9]*$")
_WORD = re.compile(r"^[1-9][0-9]*$")


def read_conllu(
    path: str | Path,
    column: str = "upos",
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> list[Sentence]:
    """The sentences of a CoNLL-U file: each syntactic word's FORM and `column` (upos, xpos,
    deprel, ...); `line` is the line of the sentence's first word."""
    path = str(path)
    tag_index = COLUMNS.index(column)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    for line, raw in read_lines(path, check_errors_policy(errors), stats):
        if not raw.strip():
            if words:
                sentences.append(Sentence(words, tags, path, start))
            words, tags = [], []
            continue
        if raw.startswith("#"):
            continue
        fields = raw.split("\t")
        if len(fields) != len(COLUMNS):
            shown = raw if len(raw) < 80 else raw[:77] + "..."
            raise InputError(
                f"expected 10 tab-separated columns (CoNLL-U), found {len(fields)}: {shown!r}",
                path,
                line,
            )
        word_id = fields[0]
        if _RANGE.match(word_id) or _EMPTY.match(word_id):
            continue  # a multiword token or an empty node: not a tagged word
        if not _WORD.match(word_id):
            raise InputError(
                f"ID {word_id!r} is not a word, a range (1-2) or an empty node", path, line
            )
        if int(word_id) != len(words) + 1:
            raise InputError(f"word ID {word_id} where {len(words) + 1} was expected", path, line)
        tag = fields[tag_index]
        if column == "upos" and tag not in UPOS_TAGS:
            raise InputError(f"UPOS {tag!r} is not one of the 17 universal POS tags", path, line)
        if not words:
            start = line
        words.append(fields[1])
        tags.append(tag)
    if words:
        sentences.append(Sentence(words, tags, path, start))
    if not sentences:
        raise InputError("no sentences in the file", path, 1)
    return sentences
