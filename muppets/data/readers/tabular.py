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

Bytes are decoded by `muppets.data.text.read_lines`, as for corpora: a byte that is not UTF-8 is an
error at its line, or U+FFFD with `errors="replace"` (counted in `stats.replaced_lines`).
What would train silently wrong is an error at its line too: a text that is null, not a string or
empty in a labelled file (unlabelled files keep every row: each needs a prediction), a regression
label that is not finite or outside `label_range`, and jsonl classification labels of mixed types
(`1` among "neg"/"pos" would become a third class).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from muppets.data.text import ReadStats, check_errors_policy, read_lines
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
    path: str | Path,
    format: str,
    header: bool = True,
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> tuple[list[str] | None, list[tuple[int, list[str] | dict]]]:
    """(header names or None, [(line, row)]). tsv/csv rows are lists; jsonl rows are dicts.

    tsv/csv rows must all have as many columns as the header (or as the first row).
    """
    if format not in FORMATS:
        raise InputError(f"unknown table format {format!r}; valid formats: {', '.join(FORMATS)}")
    path = str(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    lines = read_lines(path, check_errors_policy(errors), stats, keep_ends=True)
    if format == "jsonl":
        return None, list(_jsonl_rows(lines, path))
    rows = _tsv_rows(lines) if format == "tsv" else _csv_rows(lines, path)
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


def _tsv_rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    for line, raw in lines:
        raw = raw.rstrip("\r\n")
        if raw.strip():
            yield line, raw.split("\t")


def _csv_rows(lines: Iterator[tuple[int, str]], path: str) -> Iterator[tuple[int, list[str]]]:
    reader, start = csv.reader(text for _, text in lines), 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # Python's advice (universal-newline mode) is not the user's
            why = "a carriage return (\\r) inside an unquoted field" if "new-line" in str(e) else e
            raise InputError(f"not valid CSV: {why}", path, reader.line_num) from None
        if any(field.strip() for field in row):
            yield start, row
        start = reader.line_num + 1


def _jsonl_rows(lines: Iterator[tuple[int, str]], path: str) -> Iterator[tuple[int, dict]]:
    for line, raw in lines:
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


def parse_label(
    value: object,
    labels: Sequence[str],
    regression: bool,
    path: str,
    line: int,
    label_range: tuple[float, float] | None = None,
):
    """A label field -> its index in `labels`, or a float when `regression`."""
    if value is None:
        valid = "" if regression else f"; valid labels: {', '.join(labels)}"
        raise InputError(f"the label is null{valid}", path, line)
    if regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            raise InputError(f"label {value!r} is not a number", path, line) from None
        if not math.isfinite(score):  # nan would surface later as "loss nan", without a line
            raise InputError(f"label {value!r} is not a finite number", path, line)
        if label_range is not None and not label_range[0] <= score <= label_range[1]:
            lo, hi = label_range
            raise InputError(f"label {value!r} is outside the range {lo:g} to {hi:g}", path, line)
        return score
    text = str(value)
    if isinstance(value, bool) or text not in labels:
        raise InputError(f"unknown label {value!r}; valid labels: {', '.join(labels)}", path, line)
    return labels.index(text)


def check_text(value: object, column: Column, path: str, line: int, empty_ok: bool = False) -> str:
    """A text field that is a string (jsonl null would be read as "None"), non-empty unless
    `empty_ok` (unlabelled rows: every one needs a prediction)."""
    if not isinstance(value, str):
        found = "null" if value is None else f"{_kind(value)} {json.dumps(value)[:40]}"
        raise InputError(f"text {column!r} is {found}, not a string", path, line)
    if not empty_ok and not value.strip():
        raise InputError(f"text {column!r} is empty; remove the row or write its text", path, line)
    return value


def _kind(value: object) -> str:
    """The JSON type of a label, finer than Python's: 1 and 1.0 would be two classes."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "non-integer number" if not value.is_integer() else "number with a decimal point"
    return {str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def check_label_kinds(values: Sequence[tuple[int, object]], path: str) -> None:
    """Every (line, label) of one JSON type; else an error at the first label of the rarer type,
    naming it and the others (str() would silently make a class of `1` among "neg"/"pos")."""
    by_kind: dict[str, list[tuple[int, object]]] = {}
    for line, value in values:
        by_kind.setdefault(_kind(value), []).append((line, value))
    if len(by_kind) < 2:
        return
    odd = min(by_kind, key=lambda k: (len(by_kind[k]), -by_kind[k][0][0]))
    line, value = by_kind[odd][0]
    others = sorted({json.dumps(v) for k, rows in by_kind.items() if k != odd for _, v in rows})
    shown = ", ".join(others[:10]) + (", ..." if len(others) > 10 else "")
    message = f"label {json.dumps(value)} is a{'n' * (odd[0] in 'aeiou')} {odd}"
    raise InputError(f"{message}; the other labels are: {shown}", path, line)


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
    label_range: tuple[float, float] | None = None,
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> list[Example]:
    """Examples from a tsv/csv/jsonl file; `label=None` reads an unlabeled file (labels None).

    Classification needs the class names `labels` (their order gives the label ids; see
    `table_labels` to collect them from a training file). jsonl columns are key names.
    guid is `{guid_prefix}{n}` with n the 0-based example number. `label_range` bounds a
    regression label (STS-B: 0 to 5).
    """
    path = str(path)
    format = format or table_format(path)
    if label is not None and not regression and not labels:
        raise InputError("a classification label column needs the list of labels", path)
    names, rows = read_rows(path, format, header, errors, stats)
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
    labelled = cols[2] is not None
    examples, label_values = [], []
    for n, (line, row) in enumerate(rows):
        a, b, y = (None if c is None else get(row, c, line) for c in cols)
        # train/dev: an empty text would be trained on or scored; test rows all get predicted
        a = check_text(a, text_a, path, line, empty_ok=not labelled)
        if text_b is not None:  # by the column, not the value: null must not drop the pair
            b = check_text(b, text_b, path, line, empty_ok=not labelled)
        if labelled:
            label_values.append((line, y))
            y = parse_label(y, labels, regression, path, line, label_range)
        examples.append(
            Example(str(a), None if b is None else str(b), y, f"{guid_prefix}{n}", path, line)
        )
    if labelled and not regression:
        check_label_kinds(label_values, path)
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
    path: str | Path,
    label: Column,
    format: str | None = None,
    header: bool = True,
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> list[str]:
    """The distinct labels of a file's label column, sorted (a stable label-id order)."""
    path = str(path)
    format = format or table_format(path)
    names, rows = read_rows(path, format, header, errors, stats)
    if not rows:
        raise InputError("no examples in the file", path, 1)
    if format == "jsonl":
        get, column = _json_getter(path), label
    else:
        get, column = _list_getter, column_index(label, names, len(rows[0][1]), path)
    values = [(line, get(row, column, line)) for line, row in rows]
    for line, value in values:
        if value is None or isinstance(value, bool) or not str(value).strip():
            found = "null" if value is None else json.dumps(value)
            raise InputError(f"label {found} cannot be a class name", path, line)
    check_label_kinds(values, path)
    return sorted({str(value) for _, value in values})
