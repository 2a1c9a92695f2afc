"""Task files that used to crash with a traceback or train silently wrong (issue 19): each is now
one InputError line naming the file and line, or, with errors="replace", read and counted."""

import gzip
import json

import pytest

from muppets.data.readers.conll import read_conll
from muppets.data.readers.glue import read_glue
from muppets.data.readers.squad import read_mrqa, read_qa, read_squad
from muppets.data.readers.tabular import read_table, table_labels
from muppets.data.text import ReadStats
from muppets.errors import InputError

NOT_UTF8 = "is not UTF-8; use errors=replace to substitute U+FFFD"


def write(path, data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return str(path)


def error_of(read, *args, **kwargs) -> str:
    with pytest.raises(InputError) as error:
        read(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


# ---------------------------------------------------------------- bytes that are not UTF-8

SST2 = b"sentence\tlabel\nit 's fine \t1\nun caf\xe9 froid \t0\n"  # line 3: Latin-1 e-acute


def test_latin1_in_a_glue_file_names_file_line_and_byte(tmp_path):
    path = write(tmp_path / "train.tsv", SST2)
    assert (
        error_of(read_glue, path, "sst2", "train")
        == f"{path}:3: byte 7 of the line (0xe9) {NOT_UTF8}"
    )
    stats = ReadStats()
    examples = read_glue(path, "sst2", "train", errors="replace", stats=stats)
    assert [(e.text_a, e.label, e.line) for e in examples] == [
        ("it 's fine ", 1, 2),
        ("un caf\ufffd froid ", 0, 3),
    ]
    assert (stats.replaced_lines, stats.files) == (1, 1)


def test_latin1_in_csv_jsonl_conll_and_squad(tmp_path):
    csv = write(tmp_path / "a.csv", b'text,label\n"caf\xe9\nnoir",pos\n')
    assert error_of(read_table, csv, "text", None, "label", ["pos"]).startswith(
        f"{csv}:2: byte 5 of the line (0xe9)"
    )
    assert read_table(csv, "text", None, "label", ["pos"], errors="replace")[0].text_a == (
        "caf\ufffd\nnoir"
    )
    jsonl = write(tmp_path / "a.jsonl", b'{"text": "ok", "label": "pos"}\n{"text": "\xe9"}\n')
    assert (
        error_of(table_labels, jsonl, "label")
        == f"{jsonl}:2: byte 11 of the line (0xe9) {NOT_UTF8}"
    )
    conll = write(tmp_path / "train.txt", b"EU B-ORG\n\nM\xfcller B-PER\n")
    assert error_of(read_conll, conll) == f"{conll}:3: byte 2 of the line (0xfc) {NOT_UTF8}"
    stats = ReadStats()
    assert read_conll(conll, errors="replace", stats=stats)[1].words == ["M\ufffdller"]
    assert stats.replaced_lines == 1
    squad = write(tmp_path / "dev.json", SQUAD.replace("Who?", "W\xe9?").encode("latin-1"))
    assert error_of(read_squad, squad) == f"{squad}:5: byte 26 of the line (0xe9) {NOT_UTF8}"
    examples, stats = read_squad(squad, errors="replace")
    assert (examples[1].question, stats.replaced_lines) == ("W\ufffd?", 1)
    with pytest.raises(InputError, match="unknown errors policy 'ignore'"):
        read_conll(conll, errors="ignore")


@pytest.mark.parametrize(
    "read",
    [
        lambda p: read_table(p, "text"),
        lambda p: table_labels(p, "label"),
        lambda p: read_glue(p, "sst2", "dev"),
        read_conll,
        read_qa,
        read_mrqa,
    ],
)
def test_a_missing_file_is_named(tmp_path, read):
    path = str(tmp_path / "missing.tsv")
    assert error_of(read, path) == f"{path}: no such file"
    directory = tmp_path / "folder.tsv"
    directory.mkdir()
    assert error_of(read, str(directory)) == f"{directory}: is a directory, not a file"


# ---------------------------------------------------------------- silently wrong training data


def test_a_null_or_non_string_text_is_not_trained_on_as_none(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "good", "y": "pos"}\n{"text": null, "y": "neg"}\n')
    message = error_of(read_table, path, "text", None, "y", ["neg", "pos"])
    assert message == f"{path}:2: text 'text' is null, not a string"
    path = write(tmp_path / "n.jsonl", '{"text": 5, "y": "pos"}\n')
    message = error_of(read_table, path, "text", None, "y", ["neg", "pos"])
    assert message == f"{path}:1: text 'text' is integer 5, not a string"
    pair = write(tmp_path / "pair.jsonl", '{"a": "x", "b": null}\n')
    assert error_of(read_table, pair, "a", "b") == f"{pair}:1: text 'b' is null, not a string"


def test_an_empty_text_is_an_error_in_labelled_files_and_kept_in_unlabelled_ones(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\n  \t0\n")
    message = error_of(read_glue, path, "sst2", "train")
    assert message == f"{path}:3: text 'sentence' is empty; remove the row or write its text"
    pair = write(tmp_path / "p.jsonl", '{"a": "x", "b": "", "y": "1"}\n')
    message = error_of(read_table, pair, "a", "b", "y", ["1"])
    assert message == f"{pair}:1: text 'b' is empty; remove the row or write its text"
    test = write(tmp_path / "test.tsv", "index\tsentence\n0\tgood\n1\t \n")
    assert [e.text_a for e in read_glue(test, "sst2", "test")] == ["good", " "]  # each predicted


MIXED = ['"neg"', '"pos"', "1", '"pos"', '"neg"']


def test_mixed_label_types_name_the_value_and_the_other_labels(tmp_path):
    lines = [f'{{"text": "t{k}", "label": {y}}}' for k, y in enumerate(MIXED)]
    path = write(tmp_path / "train.jsonl", "\n".join(lines) + "\n")
    expected = f'{path}:3: label 1 is an integer; the other labels are: "neg", "pos"'
    assert error_of(table_labels, path, "label") == expected
    # with a label list from elsewhere that happens to contain "1", reading still refuses it
    assert error_of(read_table, path, "text", None, "label", ["1", "neg", "pos"]) == expected
    floats = write(tmp_path / "f.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0.0}\n')
    message = error_of(table_labels, floats, "label")
    assert (
        message
        == f"{floats}:2: label 0.0 is a number with a decimal point; the other labels are: 1"
    )
    null = write(tmp_path / "null.jsonl", '{"text": "a", "label": null}\n')
    assert error_of(table_labels, null, "label") == f"{null}:1: label null cannot be a class name"
    empty = write(tmp_path / "e.tsv", "text\tlabel\na\tpos\nb\t\n")
    assert error_of(table_labels, empty, "label") == f'{empty}:3: label "" cannot be a class name'


STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)


def stsb_row(score: str) -> str:
    return f"0\tmain-news\tx\t2012\t1\tnone\tnone\tA man.\tA woman.\t{score}"


@pytest.mark.parametrize(
    "score, message",
    [
        ("nan", "label 'nan' is not a finite number"),
        ("inf", "label 'inf' is not a finite number"),
        ("17.5", "label '17.5' is outside the range 0 to 5"),
        ("-0.5", "label '-0.5' is outside the range 0 to 5"),
    ],
)
def test_stsb_scores_must_be_finite_and_within_0_to_5(tmp_path, score, message):
    path = write(tmp_path / "dev.tsv", "\n".join([STSB_HEADER, stsb_row("5.0"), stsb_row(score)]))
    assert error_of(read_glue, path, "stsb", "dev") == f"{path}:3: {message}"


def test_stsb_edges_are_kept(tmp_path):
    path = write(tmp_path / "dev.tsv", "\n".join([STSB_HEADER, stsb_row("0"), stsb_row("5.000")]))
    assert [e.label for e in read_glue(path, "stsb", "dev")] == [0.0, 5.0]


# ---------------------------------------------------------------- SQuAD / MRQA

SQUAD = """{"version": "v2.0", "data": [{"title": "T", "paragraphs": [
 {"context": "Ann met Bob.",
  "qas": [{"id": "q1", "question": "Who met Bob?", "answers": [{"text": "Ann", "answer_start": 0}]},
          {"id": "q2",
           "question": "Who?", "answers": [{"text": "Bob", "answer_start": 8}]}]},
 {"context": "Cy ran.",
  "qas": [{"id": "q3", "question": "Who ran?", "answers": [{"text": "Cy", "answer_start": 0}]}]}
]}]}
"""


def test_a_repeated_question_id_names_both_places(tmp_path):
    repeated = SQUAD.replace('"id": "q3"', '"id": "q1"')
    path = write(tmp_path / "dev.json", repeated)
    assert error_of(read_squad, path) == (
        f"{path}:7: question id 'q1' is used twice: data[0].paragraphs[0].qas[0] (line 3) and "
        "data[0].paragraphs[1].qas[0] (line 7)"
    )
    one_line = write(tmp_path / "one.json", json.dumps(json.loads(repeated)))
    assert error_of(read_squad, one_line) == (
        f"{one_line}:1: question id 'q1' is used twice: data[0].paragraphs[0].qas[0] (line 1) "
        "and data[0].paragraphs[1].qas[0] (line 1)"
    )
    assert [(e.id, e.line) for e in read_squad(write(tmp_path / "ok.json", SQUAD))[0]] == [
        ("q1", 3),
        ("q2", 4),
        ("q3", 7),
    ]


def mrqa_line(qid: str, question: str = "Who?", context: str = "Ann met Bob.") -> str:
    qa = {"qid": qid, "question": question, "answers": ["Ann"], "detected_answers": []}
    return json.dumps({"context": context, "qas": [qa]})


def test_mrqa_repeats_empty_questions_and_bad_gzip(tmp_path):
    lines = [json.dumps({"header": {}}), mrqa_line("a"), mrqa_line("b"), mrqa_line("a")]
    path = tmp_path / "dev.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    assert error_of(read_mrqa, str(path)) == (
        f"{path}:4: question id 'a' is used twice: line 2 and line 4"
    )
    empty = write(tmp_path / "e.jsonl", mrqa_line("a", question=" ") + "\n")
    assert error_of(read_mrqa, empty) == f"{empty}:1: question a: the text is empty"
    broken = tmp_path / "b.jsonl.gz"
    broken.write_bytes(gzip.compress(b"x" * 100)[:20])
    assert error_of(read_mrqa, str(broken)).startswith(f"{broken}: not a readable gzip file (")
    squad = write(tmp_path / "c.json", SQUAD.replace('"Cy ran."', '""'))
    assert error_of(read_squad, squad) == f"{squad}: data[0].paragraphs[1]: the text is empty"
