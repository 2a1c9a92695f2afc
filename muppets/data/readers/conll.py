"""CoNLL-format token tagging files (CoNLL-2003 NER and the like) -> sentences of (words, tags).

One token per line, columns split on whitespace (`word POS chunk NER` in CoNLL-2003), sentences
separated by blank lines, `-DOCSTART-` lines (document boundaries) skipped. The tag column is
chosen by index, the last one by default. Tags are returned as written: CoNLL-2003's original
`eng.*` files use IOB1, most copies in circulation IOB2; `muppets.tasks.tag_decoding` converts.
A line with fewer columns than the tag column needs raises `InputError` at that file and line.
Bytes are decoded as for corpora (`muppets.data.text.read_lines`): a byte that is not UTF-8 is an
error at its line, or U+FFFD with errors="replace", counted in `stats.replaced_lines`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from muppets.data.text import ReadStats, check_errors_policy, read_lines
from muppets.errors import InputError

DOCSTART = "-DOCSTART-"


@dataclass(frozen=True, slots=True)
class Sentence:
    """A tagged sentence; `line` is the line of its first token (token k is on line + k)."""

    words: list[str]
    tags: list[str]
    path: str
    line: int


def read_conll(
    path: str | Path,
    tag_column: int = -1,
    word_column: int = 0,
    min_columns: int = 2,
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> list[Sentence]:
    """Sentences of a CoNLL file.

    `tag_column`/`word_column` index the whitespace-split columns (negative from the end). Every
    token line needs at least `min_columns` columns, so a line that lost its tag is an error
    instead of a word read as its own tag.
    """
    path = str(path)
    needed = max(min_columns, _needed(tag_column), _needed(word_column))
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    for line, raw in read_lines(path, check_errors_policy(errors), stats):
        columns = raw.split()
        if not columns or columns[0] == DOCSTART:
            if words:
                sentences.append(Sentence(words, tags, path, start))
            words, tags = [], []
            continue
        if len(columns) < needed:
            msg = (
                f"expected at least {needed} whitespace-separated columns "
                f"(tag column {tag_column}), found {len(columns)}: {raw.strip()!r}"
            )
            raise InputError(msg, path, line)
        if not words:
            start = line
        words.append(columns[word_column])
        tags.append(columns[tag_column])
    if words:
        sentences.append(Sentence(words, tags, path, start))
    if not sentences:
        raise InputError("no sentences in the file", path, 1)
    return sentences


def _needed(column: int) -> int:
    """How many columns a line needs for `column` to exist."""
    return column + 1 if column >= 0 else -column
