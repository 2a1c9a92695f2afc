"""Property-based tests (hypothesis) of the readers: arbitrary bytes end in examples or in one of
the project's errors (MuppetsError, one line), never in another exception; well-formed but odd
rows are all read back as written, at their own lines, or counted where a reader may set one
aside (SQuAD answers not in the context, corpus documents without text).

Builders of pretraining data (masking, instances, damaged shards): test_properties_builders.py.
"""

import csv
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muppets.data.readers.conll import read_conll
from muppets.data.readers.squad import read_mrqa, read_squad
from muppets.data.readers.tabular import read_table, table_labels
from muppets.data.text import ReadStats, read_documents
from muppets.errors import MuppetsError

FAST = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# A reader that spins fails the test (conftest.no_hang: 60 s) instead of hanging it.
pytestmark = pytest.mark.usefixtures("no_hang")


def is_one_line(error: MuppetsError) -> bool:
    return "\n" not in str(error) and "\r" not in str(error)


# Text that is odd but legal in a field: any character but the separators of the format.
def field(exclude: str) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters=exclude), max_size=12
    ).filter(lambda t: t.strip())


# ---------------------------------------------------------------- arbitrary bytes


READERS = {
    "tsv": lambda p: read_table(p, "sentence", None, "label", ["0", "1"], format="tsv"),
    "csv": lambda p: read_table(p, 0, 1, 2, ["0", "1"], format="csv", header=False),
    "jsonl": lambda p: read_table(p, "text", None, "label", ["neg", "pos"], format="jsonl"),
    "labels": lambda p: table_labels(p, "label", format="jsonl"),
    "squad": read_squad,
    "mrqa": read_mrqa,
    "conll": read_conll,
    "text": lambda p: list(read_documents([str(p)], format="text")),
    "wiki": lambda p: list(read_documents([str(p)], format="wiki")),
    "corpus-jsonl": lambda p: list(read_documents([str(p)], format="jsonl")),
}
PREFIXES = {  # a valid start, so that the bytes after it reach deeper than the first check
    "tsv": b"sentence\tlabel\n",
    "squad": b'{"data": [{"paragraphs": [{"context": "',
    "wiki": b'<doc id="1" title="t">\n',
    "jsonl": b'{"text": "',
}


@pytest.mark.parametrize("reader", list(READERS))
@FAST
@given(data=st.binary(max_size=300), prefixed=st.booleans())
def test_arbitrary_bytes_end_in_examples_or_one_line_of_ours(reader, data, prefixed, tmp_path):
    path = tmp_path / f"input.{'jsonl' if reader == 'mrqa' else 'txt'}"
    path.write_bytes((PREFIXES.get(reader, b"") if prefixed else b"") + data)
    try:
        READERS[reader](path)
    except MuppetsError as error:
        assert is_one_line(error), str(error)


@FAST
@given(data=st.binary(max_size=300))
def test_replace_reads_any_bytes_of_a_corpus_and_keeps_every_line(data, tmp_path):
    """errors="replace": nothing is an error in plain text, and every line with text comes out as
    one paragraph, stripped, in order (blank lines only separate documents)."""
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    lines = [raw.decode("utf-8", "replace") for raw in data.split(b"\n")]
    lines[0] = lines[0].removeprefix("\ufeff")
    expected = [line.strip() for line in lines if line.strip()]
    stats = ReadStats()
    try:
        documents = list(
            read_documents([str(path)], "text", errors="replace", segment=False, stats=stats)
        )
    except MuppetsError as error:
        assert not expected and "no text" in str(error)
        return
    assert [p for d in documents for p in d.sentences] == expected
    assert stats.documents == len(documents) and stats.skipped_documents == 0
    found = [n for d in documents for n in d.lines]
    assert all(lines[n - 1].strip() == p for n, p in zip(found, expected, strict=True))


@FAST
@given(paragraphs=st.lists(field("\n\r"), min_size=1, max_size=6))
def test_sentence_splitting_keeps_every_character(paragraphs, tmp_path):
    """Segmented or not, the same non-space characters, in order (a sentencex panic is counted
    and keeps its paragraph whole)."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
    stats = ReadStats()
    try:
        documents = list(read_documents([str(path)], "text", stats=stats))
    except MuppetsError as error:
        assert "no text" in str(error)  # every line was whitespace to Python
        return
    sentences = [s for d in documents for s in d.sentences]
    assert "".join("".join(s.split()) for s in sentences) == "".join(
        "".join(p.split()) for p in paragraphs
    )
    assert stats.sentences == len(sentences) and all(s == s.strip() and s for s in sentences)


# ---------------------------------------------------------------- well-formed but odd rows


@FAST
@given(
    rows=st.lists(st.tuples(field("\t\n"), st.sampled_from(["0", "1"])), min_size=1, max_size=8),
    blanks=st.lists(st.integers(0, 2), min_size=9, max_size=9),
    crlf=st.booleans(),
)
def test_every_tsv_row_is_read_as_written_at_its_line(rows, blanks, crlf, tmp_path):
    end = "\r\n" if crlf else "\n"
    lines, where = ["sentence\tlabel"], []
    for (text, label), blank in zip(rows, blanks, strict=False):
        lines += [""] * blank
        lines.append(f"{text}\t{label}")
        where.append(len(lines))
    path = tmp_path / "train.tsv"
    path.write_bytes(end.join(lines).encode("utf-8") + end.encode())
    examples = read_table(path, "sentence", None, "label", ["0", "1"], format="tsv")
    assert [(e.text_a, e.label, e.line) for e in examples] == [
        (text, int(label), line) for (text, label), line in zip(rows, where, strict=True)
    ]


@FAST
@given(rows=st.lists(st.tuples(field("\ufeff"), field(""), st.booleans()), min_size=1, max_size=6))
def test_every_csv_row_is_read_as_written(rows, tmp_path):
    """RFC 4180 quoting: commas, quotes and newlines inside fields come back unchanged (a BOM
    at the start of the file is not text: no field here starts with one)."""
    path = tmp_path / "train.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[a, b, "pos" if y else "neg"] for a, b, y in rows])
    examples = read_table(path, 0, 1, 2, ["neg", "pos"], format="csv", header=False)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [(a, b, int(y)) for a, b, y in rows]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@FAST
@given(
    rows=st.lists(
        st.tuples(field("") | JSON, st.sampled_from(["neg", "pos"]) | JSON), min_size=1, max_size=6
    )
)
def test_jsonl_rows_of_any_json_are_all_read_or_stop_at_a_line(rows, tmp_path):
    """Texts that are not non-empty strings and labels that are not the classes stop the read
    (with their line); otherwise every row is an example."""
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows) + "\n")
    try:
        examples = read_table(path, "text", None, "label", ["neg", "pos"], format="jsonl")
    except MuppetsError as error:
        assert is_one_line(error) and f"{path}:" in str(error)
        return
    assert [(e.text_a, ["neg", "pos"][e.label]) for e in examples] == rows
    assert all(isinstance(t, str) and t.strip() for t, _ in rows)


TOKEN = st.text(st.characters(whitelist_categories=("L", "N", "P", "S")), min_size=1, max_size=6)
TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


@FAST
@given(
    sentences=st.lists(st.lists(st.tuples(TOKEN, TAG), min_size=1, max_size=5), max_size=5),
    docstarts=st.booleans(),
)
def test_every_conll_token_is_read_with_its_tag(sentences, docstarts, tmp_path):
    lines = ["-DOCSTART- -X- -X- O", ""] if docstarts else []
    for sentence in sentences:
        lines += [f"{w} NN O {t}" for w, t in sentence if w != "-DOCSTART-"] + [""]
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        read = read_conll(path)
    except MuppetsError as error:
        assert "no sentences" in str(error)
        assert not any(w != "-DOCSTART-" for s in sentences for w, _ in s)
        return
    kept = [[(w, t) for w, t in s if w != "-DOCSTART-"] for s in sentences]
    assert [list(zip(s.words, s.tags, strict=True)) for s in read] == [s for s in kept if s]
    for sentence in read:  # token k of a sentence is on line + k
        assert lines[sentence.line - 1].split()[0] == sentence.words[0]


ANSWER = st.tuples(st.text(max_size=4), st.integers(-3, 40))


@FAST
@given(
    questions=st.lists(
        st.tuples(field(""), st.lists(ANSWER, max_size=3), st.booleans()), min_size=1, max_size=5
    ),
    context=field(""),
)
def test_squad_answers_are_kept_repaired_or_counted_as_dropped(questions, context, tmp_path):
    qas = []
    for n, (question, answers, impossible) in enumerate(questions):
        given_answers = [] if impossible else answers
        qas.append(
            {
                "id": f"q{n}",
                "question": question,
                "answers": [{"text": t, "answer_start": s} for t, s in given_answers],
                "is_impossible": impossible,
            }
        )
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    with pytest.warns() if _any_offset_off(context, questions) else _nothing():
        try:
            examples, stats = read_squad(path)
        except MuppetsError as error:
            assert is_one_line(error)
            return
    given_answers = [a for _, answers, impossible in questions if not impossible for a in answers]
    assert stats.questions == len(examples) == len(questions)
    assert stats.answers + stats.dropped == len(given_answers)
    assert sum(len(e.gold_texts) for e in examples) == len(given_answers)  # all kept for scoring
    assert stats.repaired + stats.dropped == len(stats.messages)
    for example in examples:
        for text, start in example.answers:
            assert text and context[start : start + len(text)] == text


def _any_offset_off(context, questions) -> bool:
    return any(
        not (t and context[s : s + len(t)] == t)
        for _, answers, impossible in questions
        if not impossible
        for t, s in answers
    )


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_carriage_return_alone_in_a_csv_field_is_one_line(tmp_path):
    """Found by the arbitrary-bytes property: csv.Error escaped as a traceback."""
    path = tmp_path / "train.csv"
    path.write_bytes(b"good film,pos\nbad\rfilm,neg\n")
    with pytest.raises(MuppetsError) as error:
        read_table(path, 0, None, 1, ["neg", "pos"], format="csv", header=False)
    assert str(error.value) == (
        f"{path}:2: not valid CSV: a carriage return (\\r) inside an unquoted field"
    )
