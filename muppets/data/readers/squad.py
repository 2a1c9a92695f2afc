"""Extractive QA examples from SQuAD v1.1/v2.0 JSON and MRQA 2019 jsonl(.gz) files.

Every question becomes a `QAExample` with two kinds of answers:
- `answers`: training targets, (text, char_start) with `context[start:start+len(text)] == text`;
- `gold_texts`: every annotated answer text, for evaluation (the official scripts score texts).

SQuAD offsets that do not point at their text are counted and reported (a warning line with file
and question id; all lines also in `QAStats.messages`), never a crash. Such an answer is moved to
the occurrence of its text nearest to the given offset (ties: the earlier one); if the text does
not occur in the context, it is dropped from the training targets and kept for evaluation.

MRQA: line 1 is a header; `char_spans` are inclusive, and the span `context[s:e+1]` is the
training target (it can differ from `detected_answers.text` by case or punctuation; MRQA matched
spans after SQuAD normalization). `answers` (the raw strings) are the evaluation answers. The
question id is MRQA's `qid`.

SQuAD files are one JSON document (the official ones are a single line), so a question's line is
found by searching for its id in the text; it is None if the id is not found verbatim.

Bytes are decoded by `muppets.data.text`'s line decoder, as for corpora (a byte that is not UTF-8
is an error at its line, or U+FFFD with errors="replace", counted in `QAStats.replaced_lines`).
A question id used twice is an error naming both places: predictions and scores are keyed by id,
so a duplicate would silently change the reported F1. So are an empty question or context.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from muppets.data.text import ReadStats, check_errors_policy, decode_lines, open_input, read_lines
from muppets.errors import InputError

MAX_WARNINGS = 20  # warning lines per file; QAStats.messages keeps all of them


class Answer(NamedTuple):
    text: str
    char_start: int


@dataclass(frozen=True, slots=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: list[Answer]  # training targets (offsets verified); empty when impossible
    gold_texts: list[str]  # evaluation answers; [] for unanswerable questions
    is_impossible: bool
    path: str
    line: int | None


@dataclass
class QAStats:
    """What a QA reader read, repaired and dropped."""

    questions: int = 0
    impossible: int = 0  # SQuAD v2.0 unanswerable questions
    unlabeled: int = 0  # answerable questions without any answer (test files)
    answers: int = 0  # training targets kept
    repaired: int = 0  # offsets moved to where the text occurs
    dropped: int = 0  # answers whose text is not in the context (kept in gold_texts only)
    replaced_lines: int = 0  # lines with bytes that were not UTF-8 (errors="replace")
    messages: list[str] = field(default_factory=list)


def read_qa(path: str | Path, errors: str = "strict") -> tuple[list[QAExample], QAStats]:
    """SQuAD JSON (.json) or MRQA jsonl (.jsonl, .jsonl.gz), chosen by the file name."""
    name = str(path).lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return read_mrqa(path, errors)
    return read_squad(path, errors)


def read_squad(path: str | Path, errors: str = "strict") -> tuple[list[QAExample], QAStats]:
    """Examples of a SQuAD v1.1 or v2.0 JSON file (`data[].paragraphs[].qas[]`)."""
    path = str(path)
    lines = ReadStats()
    text = "".join(t for _, t in read_lines(path, check_errors_policy(errors), lines, True))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise InputError('expected a SQuAD JSON object with a "data" list', path, 1)
    locate, stats, examples = _IdLocator(text), QAStats(), []
    stats.replaced_lines = lines.replaced_lines
    seen: dict[str, str] = {}  # question id -> where it was first
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _nonempty(_get(paragraph, "context", str, path, where), where, path)
            for q, qa in enumerate(_get(paragraph, "qas", list, path, where)):
                where_q = f"{where}.qas[{q}]"
                qid = str(_get(qa, "id", (str, int), path, where_q))
                line = locate(qid)
                place = where_q if line is None else f"{where_q} (line {line})"
                _check_unique(seen, qid, place, path, line)
                question = _get(qa, "question", str, path, where_q, line)
                _nonempty(question, f"question {qid}", path, line)
                impossible = qa.get("is_impossible", False)
                raw = qa.get("answers", [])
                if not isinstance(impossible, bool) or not isinstance(raw, list):
                    msg = f"question {qid}: is_impossible must be true/false and answers a list"
                    raise InputError(msg, path, line)
                if impossible and raw:
                    msg = f"question {qid}: is_impossible is true but it has answers"
                    raise InputError(msg, path, line)
                targets, gold = [], []
                for answer in raw:
                    answer_text = _get(answer, "text", str, path, where_q, line)
                    start = _get(answer, "answer_start", int, path, where_q, line)
                    gold.append(answer_text)
                    fixed = _check_offset(context, answer_text, start, qid, path, line, stats)
                    if fixed is not None:
                        targets.append(fixed)
                examples.append(
                    QAExample(qid, question, context, targets, gold, impossible, path, line)
                )
                _count(stats, examples[-1])
    return _finish(examples, stats, path)


def read_mrqa(path: str | Path, errors: str = "strict") -> tuple[list[QAExample], QAStats]:
    """Examples of an MRQA 2019 jsonl file (gzip when the name ends in .gz)."""
    path = str(path)
    check_errors_policy(errors)
    stats, examples, lines = QAStats(), [], ReadStats()
    seen: dict[str, str] = {}
    with open_input(path) as f:
        for line, raw in decode_lines(f, path, errors, lines):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path, line) from None
            if line == 1 and isinstance(record, dict) and "header" in record:
                continue
            where = f"line {line}"
            context = _get(record, "context", str, path, where, line)
            for qa in _get(record, "qas", list, path, where, line):
                qid = str(_get(qa, "qid", (str, int), path, where, line))
                _check_unique(seen, qid, f"line {line}", path, line)
                question = _get(qa, "question", str, path, where, line)
                _nonempty(question, f"question {qid}", path, line)
                gold = [str(t) for t in _get(qa, "answers", list, path, where, line)]
                targets = []
                for detected in qa.get("detected_answers", []):
                    for span in _get(detected, "char_spans", list, path, where, line):
                        if not (len(span) == 2 and 0 <= span[0] <= span[1] < len(context)):
                            msg = f"question {qid}: char span {span} is outside the context"
                            raise InputError(msg, path, line)
                        targets.append(Answer(context[span[0] : span[1] + 1], span[0]))
                examples.append(QAExample(qid, question, context, targets, gold, False, path, line))
                _count(stats, examples[-1])
    stats.replaced_lines = lines.replaced_lines
    return _finish(examples, stats, path)


def _check_unique(seen: dict[str, str], qid: str, place: str, path: str, line: int | None):
    """Predictions and scores are keyed by id: a second question with it would replace the first."""
    if qid in seen:
        raise InputError(f"question id {qid!r} is used twice: {seen[qid]} and {place}", path, line)
    seen[qid] = place


def _nonempty(text: str, what: str, path: str, line: int | None = None) -> str:
    if not text.strip():
        raise InputError(f"{what}: the text is empty", path, line)
    return text


def _get(obj, key: str, kind, path: str, where: str, line: int | None = None):
    """obj[key], checked to be of type `kind`; a missing or wrong value names the JSON path."""
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{where}: missing {key!r}", path, line)
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{where}: {key!r} has the wrong type {type(value).__name__}", path, line)
    return value


def _check_offset(context, text, start, qid, path, line, stats) -> Answer | None:
    """The answer with a verified offset, a repaired one (counted), or None (counted, dropped)."""
    if context[start : start + len(text)] == text and text:
        return Answer(text, start)
    where = f"{path}:{line}" if line is not None else path
    found = [i for i in _occurrences(context, text)] if text else []
    if found:
        best = min(found, key=lambda i: (abs(i - start), i))
        stats.repaired += 1
        what = f"moved to {best}"
    else:
        stats.dropped += 1
        what = "text not in the context; dropped from training targets, kept for evaluation"
    message = f"{where}: question {qid}: answer {text!r} is not at offset {start}; {what}"
    stats.messages.append(message)
    if len(stats.messages) <= MAX_WARNINGS:
        warnings.warn(message, stacklevel=3)
    return Answer(text, best) if found else None


def _occurrences(context: str, text: str) -> list[int]:
    out, i = [], context.find(text)
    while i >= 0:
        out.append(i)
        i = context.find(text, i + 1)
    return out


def _count(stats: QAStats, example: QAExample) -> None:
    stats.questions += 1
    stats.answers += len(example.answers)
    stats.impossible += example.is_impossible
    stats.unlabeled += not example.is_impossible and not example.gold_texts


def _finish(examples, stats, path) -> tuple[list[QAExample], QAStats]:
    if not examples:
        raise InputError("no questions in the file", path, 1)
    extra = len(stats.messages) - MAX_WARNINGS
    if extra > 0:
        warnings.warn(f"{path}: {extra} more answer offsets did not match", stacklevel=3)
    return examples, stats


class _IdLocator:
    """Line of each question id in the JSON text, searching forward (ids appear in file order)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1
        self.one_line = "\n" not in text.rstrip("\n")  # the official files: nothing to search

    def __call__(self, qid: str) -> int | None:
        if self.one_line:
            return 1
        for needle in dict.fromkeys([json.dumps(qid), json.dumps(qid, ensure_ascii=False)]):
            found = self.text.find(needle, self.pos)
            if found >= 0:
                self.line += self.text.count("\n", self.pos, found)
                self.pos = found + 1  # past it: a repeated id is found at its own place
                return self.line
        return None
