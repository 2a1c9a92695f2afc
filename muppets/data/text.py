"""Corpora -> documents -> sentences, keeping (path, line) for every item.

Three formats, sniffed per file when `format="auto"`:
- "text": plain text. Documents are separated by one or more blank lines; each line is a paragraph
  (BERT's one-sentence-per-line files are the special case of one sentence per paragraph).
- "wiki": WikiExtractor output, `<doc id=.. url=.. title="T">` ... `</doc>`, one paragraph per
  line. The first body line repeats the title; we drop it when it equals the `title` attribute
  (it is a heading, not a sentence, and would become a one-word "sentence" in every document).
  Section headings such as "Biography." stay: they are part of the text WikiExtractor kept.
- "jsonl": one JSON object per line, the document text in `text_field`; newlines inside the text
  separate paragraphs.

Paragraphs are split into sentences with `sentencex` (rule-based, Rust core, ~30 MB/s here);
sentences never span lines. Files are read as bytes and decoded line by line, so a byte that is not
UTF-8 is reported with its file and line (or replaced by U+FFFD with `errors="replace"`, counted).
Documents without any text are skipped and counted in `ReadStats`, never dropped silently.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import sentencex

from muppets.errors import InputError

FORMATS = ("auto", "text", "wiki", "jsonl")
ERROR_POLICIES = ("strict", "replace")
_TITLE = re.compile(r'\btitle="(.*)"\s*>\s*$')


@dataclass(slots=True)
class Document:
    """One document: its sentences (or paragraphs when not segmented) and where each came from."""

    path: str  # the file as given (or as the glob expanded it), never made absolute
    line: int  # 1-based: the `<doc>` line, the JSON line, or the first text line
    sentences: list[str]
    lines: list[int]  # the line of each sentence


@dataclass
class ReadStats:
    """Running counts of what the readers consumed and skipped (updated while iterating)."""

    files: int = 0
    bytes_read: int = 0
    documents: int = 0  # documents yielded (with at least one sentence)
    sentences: int = 0
    skipped_documents: int = 0  # documents without any text
    first_skipped: str | None = None  # "path:line" of the first skipped document
    replaced_lines: int = 0  # lines with bytes that were not UTF-8 (errors="replace")
    unsegmented_paragraphs: int = 0  # sentencex failed: the paragraph is one sentence
    first_unsegmented: str | None = None
    formats: dict[str, str] = field(default_factory=dict)  # path -> format used

    def skip(self, path: str, line: int) -> None:
        self.skipped_documents += 1
        if self.first_skipped is None:
            self.first_skipped = f"{path}:{line}"


def resolve_inputs(inputs: Sequence[str]) -> list[str]:
    """Files and globs -> files, in the given order (a glob's matches sorted by name)."""
    if not inputs:
        raise InputError("no input files given")
    files: list[str] = []
    for pattern in inputs:
        pattern = str(pattern)
        if glob.has_magic(pattern):
            matches = sorted(m for m in glob.glob(pattern) if Path(m).is_file())
            if not matches:
                raise InputError("the glob matches no files", path=pattern)
            files += matches
        elif Path(pattern).is_dir():
            raise InputError("is a directory; give files or a glob such as DIR/*.txt", pattern)
        elif not Path(pattern).is_file():
            raise InputError("no such file", path=pattern)
        else:
            files.append(pattern)
    return files


def sniff_format(path: str) -> str:
    """'wiki' if the first non-blank line opens a <doc>, 'jsonl' if it opens a JSON object."""
    with open_input(path) as f:
        for raw in f:
            head = raw.strip()
            if head:
                if head.startswith(b"<doc"):
                    return "wiki"
                return "jsonl" if head.startswith(b"{") else "text"
    return "text"  # an empty file has no documents in any format


def check_errors_policy(errors: str) -> str:
    if errors not in ERROR_POLICIES:
        raise InputError(f"unknown errors policy '{errors}' (valid: {', '.join(ERROR_POLICIES)})")
    return errors


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """`path` opened for bytes (a `.gz` file decompressed: the multilingual corpora and MRQA ship
    so); a missing file, a directory or a damaged gzip stream is an InputError naming it."""
    try:
        f = gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path) from None
    except PermissionError:
        raise InputError("permission denied", path) from None
    with f:
        try:
            yield f
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # raised as the stream is read
            raise InputError(f"not a readable gzip file ({e})", path) from None


def decode_lines(
    raw_lines: Iterable[bytes], path: str, errors: str, stats: ReadStats, keep_ends: bool = False
) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of byte lines, decoded as UTF-8 one line at a time, so that a
    bad byte is reported with its line, or replaced by U+FFFD and counted (errors="replace")."""
    for number, raw in enumerate(raw_lines, 1):
        stats.bytes_read += len(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if errors != "replace":
                raise InputError(
                    f"byte {e.start + 1} of the line (0x{raw[e.start]:02x}) is not UTF-8; "
                    "use errors=replace to substitute U+FFFD",
                    path,
                    number,
                ) from None
            stats.replaced_lines += 1
            text = raw.decode("utf-8", errors="replace")
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark is not text
        yield number, text if keep_ends else text.rstrip("\r\n")


def read_lines(
    path: str, errors: str, stats: ReadStats, keep_ends: bool = False
) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end unless `keep_ends`) of a UTF-8 file.

    The one way every reader (corpora and task files) turns bytes into text."""
    with open_input(path) as f:
        yield from decode_lines(f, path, errors, stats, keep_ends)


# Each parser yields (document line, [(line, paragraph), ...]) with stripped, non-empty paragraphs.
Paragraphs = list[tuple[int, str]]


def _parse_text(lines: Iterator[tuple[int, str]], path: str) -> Iterator[tuple[int, Paragraphs]]:
    paragraphs: Paragraphs = []
    for number, text in lines:
        text = text.strip()
        if text:
            paragraphs.append((number, text))
        elif paragraphs:
            yield paragraphs[0][0], paragraphs
            paragraphs = []
    if paragraphs:
        yield paragraphs[0][0], paragraphs


def _parse_wiki(lines: Iterator[tuple[int, str]], path: str) -> Iterator[tuple[int, Paragraphs]]:
    start = 0  # line of the open <doc>, 0 outside a document
    title: str | None = None
    paragraphs: Paragraphs = []
    for number, text in lines:
        text = text.strip()
        if text.startswith("<doc"):
            if start:
                raise InputError(f"<doc> inside the <doc> opened on line {start}", path, number)
            start, paragraphs = number, []
            match = _TITLE.search(text)
            title = match.group(1).strip() if match else None
        elif text == "</doc>":
            if not start:
                raise InputError("</doc> without an opening <doc>", path, number)
            yield start, paragraphs
            start = 0
        elif text:
            if not start:
                raise InputError("text outside <doc> ... </doc>", path, number)
            if title is not None and not paragraphs and text == title:
                title = None  # the title line repeats the attribute: drop it (module docstring)
                continue
            title = None
            paragraphs.append((number, text))
    if start:
        raise InputError("<doc> is never closed by </doc>", path, start)


def _parse_jsonl(
    lines: Iterator[tuple[int, str]], path: str, text_field: str
) -> Iterator[tuple[int, Paragraphs]]:
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg} (column {e.colno})", path, number) from None
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, got {type(record).__name__}", path, number)
        if text_field not in record:
            keys = ", ".join(map(str, record)) or "none"
            raise InputError(f"no '{text_field}' field (keys: {keys})", path, number)
        body = record[text_field]
        if not isinstance(body, str):
            kind = type(body).__name__
            raise InputError(f"'{text_field}' must be a string, got {kind}", path, number)
        yield number, [(number, p.strip()) for p in body.split("\n") if p.strip()]


# Rust's char::is_whitespace beyond ASCII. sentencex 1.0.32 panics on "rated R\u00a0." (a byte
# index inside a multi-byte space, languages/language.rs:829), so it gets plain spaces instead;
# one character for one keeps every offset, and the sentences are cut from the original text.
_WIDE = "\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
_WIDE_SPACES = str.maketrans(dict.fromkeys(_WIDE, " "))
_HAS_WIDE = re.compile(f"[{_WIDE}]").search  # a scan, ~10x cheaper than translate and compare


def split_sentences(paragraph: str, language: str = "en") -> list[str]:
    """sentencex's sentences of one paragraph; they concatenate back to the paragraph."""
    if paragraph.isascii() or not _HAS_WIDE(paragraph):
        return sentencex.segment(language, paragraph)
    safe = paragraph.translate(_WIDE_SPACES)
    sentences, start = [], 0
    for piece in sentencex.segment(language, safe):
        sentences.append(paragraph[start : start + len(piece)])
        start += len(piece)
    return sentences


def _segment(
    paragraphs: Paragraphs, language: str, path: str, stats: ReadStats
) -> tuple[list[str], list[int]]:
    sentences: list[str] = []
    lines: list[int] = []
    for number, paragraph in paragraphs:
        try:
            pieces = split_sentences(paragraph, language)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a panic in sentencex's Rust (pyo3's PanicException): keep it whole
            pieces = [paragraph]
            stats.unsegmented_paragraphs += 1
            stats.first_unsegmented = stats.first_unsegmented or f"{path}:{number}"
        for sentence in pieces:
            sentence = sentence.strip()  # sentencex keeps the trailing spaces
            if sentence:
                sentences.append(sentence)
                lines.append(number)
    return sentences, lines


def read_documents(
    inputs: Sequence[str],
    format: str = "auto",
    text_field: str = "text",
    errors: str = "strict",
    segment: bool = True,
    language: str = "en",
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """Stream the documents of many files in order; raises InputError on an empty corpus.

    `segment=False` yields paragraphs instead of sentences (enough for tokenizer training, and
    faster). Pass a `ReadStats` to watch progress and the skipped counts while iterating.
    """
    if format not in FORMATS:
        raise InputError(f"unknown format '{format}' (valid: {', '.join(FORMATS)})")
    check_errors_policy(errors)
    stats = stats if stats is not None else ReadStats()
    files = resolve_inputs(inputs)
    for path in files:
        kind = sniff_format(path) if format == "auto" else format
        stats.files += 1
        stats.formats[path] = kind
        lines = read_lines(path, errors, stats)
        if kind == "wiki":
            parsed = _parse_wiki(lines, path)
        elif kind == "jsonl":
            parsed = _parse_jsonl(lines, path, text_field)
        else:
            parsed = _parse_text(lines, path)
        for line, paragraphs in parsed:
            if segment:
                sentences, sentence_lines = _segment(paragraphs, language, path, stats)
            else:
                sentences, sentence_lines = [p for _, p in paragraphs], [n for n, _ in paragraphs]
            if not sentences:
                stats.skip(path, line)
                continue
            stats.documents += 1
            stats.sentences += len(sentences)
            yield Document(path, line, sentences, sentence_lines)
    if stats.documents == 0:
        where = files[0] if len(files) == 1 else None
        skipped = f" ({stats.skipped_documents} empty documents skipped)"
        raise InputError(
            f"no text in {len(files)} input file(s){skipped if stats.skipped_documents else ''}",
            where,
        )
