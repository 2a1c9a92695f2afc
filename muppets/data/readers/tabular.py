"""Sentence(-pair) classification and regression examples from tsv, csv or jsonl files.

Columns are chosen by header name or by index (negative counts from the end). Every example keeps
the file and the 1-based line it came from. Bad input raises `InputError` at that file and line: a
row with the wrong number of columns, a label outside the label list (the message lists the valid
ones), a regression label that is not a number, a JSON line that does not parse, a file without
examples.

tsv is split on tabs only, with no quoting: GLUE's files contain unbalanced `"` (MRPC, QNLI, RTE),
and the reference readers use `csv.reader(quotechar=None)` for the same reason. csv uses Python's
`csv` module (RFC 4180 quotes, fields may span lines; an example's line is where its row starts).
A UTF-8 byte-order mark is removed (GLUE's MRPC header starts with one). Blank lines are not rows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from muppets.errors import InputError

FORMATS = ("tsv", "csv", "jsonl")
Column = str | int


@dataclass(frozen=True, slots=True)
class Example:
    """One classification/regression example.

    `label` is the index of the class in the task's label list, a float for regression, or None
    when the file has no labels (test sets).
    """

    text_a: str
    text_b: str | None
    label: int | float | None
    guid: str
    path: str
    line: int


def table_format(path: str | Path) -> str:
    """The format, "tsv", "csv" or "jsonl", from the file name (.tsv/.txt, .csv, .jsonl/.json)."""
    suffix = Path(path).suffix.lower()
    formats = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
    if suffix not in formats:
        raise InputError(f"cannot tell the format from {suffix!r}; give one of {FORMATS}", path)
    return formats[suffix]


def read_rows(
    path: str | Path, format: str, header: bool = True
) -> tuple[list[str] | None, list[tuple[int, list[str] | dict]]]:
    """(header names or None, [(line, row)]). tsv/csv rows are lists; jsonl rows are dicts.

    tsv/csv rows must all have as many columns as the header (or as the first row).
    """
    if format not in FORMATS:
        raise InputError(f"unknown table format {format!r}; valid formats: {', '.join(FORMATS)}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        if format == "jsonl":
            return None, list(_jsonl_rows(f, path))
        rows = _tsv_rows(f) if format == "tsv" else _csv_rows(f)
        names, out, width = None, [], None
        for line, row in rows:
            if width is None:
                width = len(row)
                if header:
                    names = row
                    continue
            if len(row) != width:
                sep = "tab-separated" if format == "tsv" else "comma-separated"
                raise InputError(f"expected {width} {sep} columns, found {len(row)}", path, line)
            out.append((line, row))
    return names, out


def _tsv_rows(f) -> Iterator[tuple[int, list[str]]]:
    for line, raw in enumerate(f, start=1):
        raw = raw.rstrip("\r\n")
        if raw.strip():
            yield line, raw.split("\t")


def _csv_rows(f) -> Iterator[tuple[int, list[str]]]:
    reader, start = csv.reader(f), 1
    for row in reader:
        if any(field.strip() for field in row):
            yield start, row
        start = reader.line_num + 1


def _jsonl_rows(f, path) -> Iterator[tuple[int, dict]]:
    for line, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path, line) from None
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object, found {type(row).__name__}", path, line)
        yield line, row


def column_index(column: Column, names: list[str] | None, width: int, path: str) -> int:
    """A header name or an index (negative from the end) -> a non-negative index."""
    if isinstance(column, str):
        if names is None:
            raise InputError(f"column {column!r} is a name but the file has no header", path)
        if column not in names:
            raise InputError(f"no column {column!r}; the header has: {', '.join(names)}", path, 1)
        return names.index(column)
    if not -width <= column < width:
        raise InputError(f"column index {column} is out of range for {width} columns", path, 1)
    return column % width


def parse_label(value: object, labels: Sequence[str], regression: bool, path: str, line: int):
    """A label field -> its index in `labels`, or a float when `regression`."""
    if regression:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"label {value!r} is not a number", path, line) from None
    text = str(value)
    if isinstance(value, bool) or text not in labels:
        raise InputError(f"unknown label {value!r}; valid labels: {', '.join(labels)}", path, line)
    return labels.index(text)


def read_table(
    path: str | Path,
    text_a: Column,
    text_b: Column | None = None,
    label: Column | None = None,
    labels: Sequence[str] = (),
    regression: bool = False,
    format: str | None = None,
    header: bool = True,
    guid_prefix: str = "",
) -> list[Example]:
    """Examples from a tsv/csv/jsonl file; `label=None` reads an unlabeled file (labels None).

    Classification needs the class names `labels` (their order gives the label ids; see
    `table_labels` to collect them from a training file). jsonl columns are key names.
    guid is `{guid_prefix}{n}` with n the 0-based example number.
    """
    path = str(path)
    format = format or table_format(path)
    if label is not None and not regression and not labels:
        raise InputError("a classification label column needs the list of labels", path)
    names, rows = read_rows(path, format, header)
    if not rows:
        raise InputError("no examples in the file", path, 1)
    cols = [text_a, text_b, label]
    if format == "jsonl":
        if any(isinstance(c, int) for c in cols):
            raise InputError("jsonl columns must be key names, not indices", path)
        get = _json_getter(path)
    else:
        width = len(rows[0][1])
        cols = [None if c is None else column_index(c, names, width, path) for c in cols]
        get = _list_getter
    examples = []
    for n, (line, row) in enumerate(rows):
        a, b, y = (None if c is None else get(row, c, line) for c in cols)
        if cols[2] is not None:  # a labeled file: every row needs a valid label
            y = parse_label(y, labels, regression, path, line)
        examples.append(
            Example(str(a), None if b is None else str(b), y, f"{guid_prefix}{n}", path, line)
        )
    return examples


def _list_getter(row: list[str], column: int, line: int) -> str:
    return row[column]


def _json_getter(path: str):
    def get(row: dict, key: str, line: int) -> object:
        if key not in row:
            raise InputError(f"no key {key!r}; the object has: {', '.join(row)}", path, line)
        return row[key]

    return get


def table_labels(
    path: str | Path, label: Column, format: str | None = None, header: bool = True
) -> list[str]:
    """The distinct labels of a file's label column, sorted (a stable label-id order)."""
    path = str(path)
    format = format or table_format(path)
    names, rows = read_rows(path, format, header)
    if not rows:
        raise InputError("no examples in the file", path, 1)
    if format == "jsonl":
        get, column = _json_getter(path), label
    else:
        get, column = _list_getter, column_index(label, names, len(rows[0][1]), path)
    return sorted({str(get(row, column, line)) for line, row in rows})
