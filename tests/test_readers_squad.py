"""SQuAD v1.1/v2.0 JSON and MRQA jsonl.gz readers: exact examples, offset repair reported with file
and question id, errors with file and line, and counts on the real files when they are here."""

import gzip
import json
from pathlib import Path

import pytest

from muppets.data.readers.squad import Answer, QAExample, read_mrqa, read_qa, read_squad
from muppets.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTEXT = "The cat sat. The cat ran to the mat."  # "cat" at 4 and 17, "mat" at 32


def squad_file(tmp_path, qas, name="s.json", indent=2, version="1.1"):
    document = {
        "version": version,
        "data": [{"title": "T", "paragraphs": [{"context": CONTEXT, "qas": qas}]}],
    }
    path = tmp_path / name
    path.write_text(json.dumps(document, indent=indent), encoding="utf-8")
    return str(path)


def line_of(path, text):
    lines = Path(path).read_text().split("\n")
    return next(n for n, line in enumerate(lines, start=1) if text in line)


def test_squad_v11_exact_repaired_and_dropped_answers(tmp_path):
    qas = [
        {
            "id": "q1",
            "question": "Who sat?",
            "answers": [{"text": "The cat", "answer_start": 0}, {"text": "cat", "answer_start": 4}],
        },
        # "cat" is at 4 and 17; offset 15 is nearest to 17
        {"id": "q2", "question": "Who ran?", "answers": [{"text": "cat", "answer_start": 15}]},
        # "dog" is not in the context: dropped from the targets, kept for evaluation
        {
            "id": "q3",
            "question": "To what?",
            "answers": [{"text": "mat", "answer_start": 32}, {"text": "dog", "answer_start": 3}],
        },
    ]
    path = squad_file(tmp_path, qas)
    with pytest.warns(UserWarning) as caught:
        examples, stats = read_squad(path)
    l1, l2, l3 = (line_of(path, f'"{q}"') for q in ("q1", "q2", "q3"))
    assert examples == [
        QAExample(
            "q1",
            "Who sat?",
            CONTEXT,
            [Answer("The cat", 0), Answer("cat", 4)],
            ["The cat", "cat"],
            False,
            path,
            l1,
        ),
        QAExample("q2", "Who ran?", CONTEXT, [Answer("cat", 17)], ["cat"], False, path, l2),
        QAExample("q3", "To what?", CONTEXT, [Answer("mat", 32)], ["mat", "dog"], False, path, l3),
    ]
    assert (stats.questions, stats.answers, stats.repaired, stats.dropped) == (3, 4, 1, 1)
    assert stats.messages == [
        f"{path}:{l2}: question q2: answer 'cat' is not at offset 15; moved to 17",
        f"{path}:{l3}: question q3: answer 'dog' is not at offset 3; text not in the context; "
        "dropped from training targets, kept for evaluation",
    ]
    assert [str(w.message) for w in caught] == stats.messages


def test_squad_v20_impossible_questions_and_one_line_files(tmp_path):
    qas = [
        {
            "question": "Who sat?",
            "id": "a",
            "answers": [{"text": "cat", "answer_start": 4}],
            "is_impossible": False,
        },
        {"question": "Who flew?", "id": "b", "answers": [], "is_impossible": True},
        {"question": "Who?", "id": "c"},  # no answers at all: an unlabeled (test) question
    ]
    path = squad_file(tmp_path, qas, indent=None, version="v2.0")
    examples, stats = read_qa(path)
    assert [(e.id, e.answers, e.gold_texts, e.is_impossible, e.line) for e in examples] == [
        ("a", [Answer("cat", 4)], ["cat"], False, 1),
        ("b", [], [], True, 1),
        ("c", [], [], False, 1),
    ]
    assert (stats.questions, stats.impossible, stats.unlabeled, stats.answers) == (3, 1, 1, 1)


def test_squad_errors_name_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n   "paragraphs": [}\n]}')
    with pytest.raises(InputError) as e:
        read_squad(path)
    assert str(e.value) == f"{path}:3: invalid JSON: Expecting value (column 19)"

    path = squad_file(tmp_path, [{"id": "q9", "answers": []}], name="noq.json")
    with pytest.raises(InputError) as e:
        read_squad(path)
    assert (
        str(e.value)
        == f"{path}:{line_of(path, 'q9')}: data[0].paragraphs[0].qas[0]: missing 'question'"
    )

    bad = [
        {
            "id": "q1",
            "question": "?",
            "is_impossible": True,
            "answers": [{"text": "cat", "answer_start": 4}],
        }
    ]
    path = squad_file(tmp_path, bad, name="both.json")
    with pytest.raises(
        InputError, match=r"both.json:\d+: question q1: is_impossible is true but it has answers"
    ):
        read_squad(path)

    path = tmp_path / "empty.json"
    path.write_text('{"version": "1.1", "data": []}')
    with pytest.raises(InputError) as e:
        read_squad(path)
    assert str(e.value) == f"{path}:1: no questions in the file"


def mrqa_file(tmp_path, records, name="m.jsonl.gz"):
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"header": {"dataset": "SQuAD", "split": "dev"}}) + "\n")
        for record in records:
            f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return str(path)


def test_mrqa_inclusive_spans_are_the_targets(tmp_path):
    detected = [
        {"text": "the cat", "char_spans": [[13, 19]], "token_spans": [[3, 4]]},
        {"text": "cat", "char_spans": [[4, 6], [17, 19]], "token_spans": [[1, 1], [4, 4]]},
    ]
    qa = {"qid": "m1", "question": "Who ran?", "answers": ["the cat", "cat"]}
    record = {"id": "", "context": CONTEXT, "qas": [{**qa, "detected_answers": detected}]}
    path = mrqa_file(tmp_path, [record])
    examples, stats = read_qa(path)
    assert examples == [
        QAExample(
            "m1",
            "Who ran?",
            CONTEXT,
            [Answer("The cat", 13), Answer("cat", 4), Answer("cat", 17)],
            ["the cat", "cat"],
            False,
            path,
            2,
        )
    ]
    assert (stats.questions, stats.answers, stats.repaired) == (1, 3, 0)

    record["qas"][0]["detected_answers"][0]["char_spans"] = [[30, 36]]  # ends past the context
    path = mrqa_file(tmp_path, [record, record], name="far.jsonl.gz")
    with pytest.raises(InputError) as e:
        read_mrqa(path)
    assert str(e.value) == f"{path}:2: question m1: char span [30, 36] is outside the context"

    path = mrqa_file(tmp_path, ['{"context": "x", "qas": [}'], name="bad.jsonl.gz")
    with pytest.raises(InputError) as e:
        read_mrqa(path)
    assert str(e.value) == f"{path}:2: invalid JSON: Expecting value (column 26)"

    with pytest.raises(InputError, match=r"none.jsonl.gz:1: no questions in the file"):
        read_mrqa(mrqa_file(tmp_path, [], name="none.jsonl.gz"))


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not here")
def test_real_qa_files():
    examples, stats = read_qa(DATA / "xquad-en" / "xquad.en.json")
    assert (stats.questions, stats.answers, stats.repaired, stats.dropped) == (1190, 1190, 0, 0)
    assert (examples[0].id, examples[0].line, examples[-1].line) == (
        "56beb4343aeaaa14008c925b",
        15,
        13335,
    )

    examples, stats = read_qa(DATA / "squad-v2.0" / "dev-v2.0.json")
    assert (stats.questions, stats.impossible, stats.answers, stats.repaired) == (
        11873,
        5945,
        20302,
        0,
    )
    assert sum(len(e.gold_texts) for e in examples) == 20302

    examples, stats = read_qa(DATA / "mrqa" / "dev" / "SQuAD.jsonl.gz")
    assert (stats.questions, stats.answers, examples[-1].line) == (10507, 34727, 2068)
    # spans that differ from their detected text (case, punctuation, articles; DATA.md section 8)
    assert sum(a.text not in e.gold_texts for e in examples for a in e.answers) == 264
