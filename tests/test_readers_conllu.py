"""UD CoNLL-U reader: words and UPOS of syntactic words only, errors at file and line."""

import gzip

import pytest

from muppets.data.readers.conllu import UPOS_TAGS, read_conllu
from muppets.errors import InputError
from muppets.tasks.registry import read_split, score, task_spec


def row(*columns: str) -> str:
    """A CoNLL-U line: ID FORM LEMMA UPOS, the other six columns '_'."""
    return "\t".join([*columns, *["_"] * (10 - len(columns))])


# Line numbers matter: the tests check them.
TEXT = "\n".join(
    [
        "# newdoc id = d1",  # 1
        "# sent_id = s1",  # 2
        "# text = Vamos al mar.",  # 3
        row("1", "Vamos", "ir", "VERB"),  # 4
        row("2-3", "al"),  # 5  multiword token: "a" + "el"
        row("2", "a", "a", "ADP"),  # 6
        row("3", "el", "el", "DET"),  # 7
        row("4", "mar", "mar", "NOUN"),  # 8
        row("4.1", "fue", "ir", "VERB"),  # 9  empty node: enhanced graphs only
        row("5", ".", ".", "PUNCT"),  # 10
        "",  # 11
        "# sent_id = s2",  # 12
        row("1", "Hola", "hola", "INTJ"),  # 13
        "",  # 14
    ]
)


def write(tmp_path, text, name="t.conllu"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", ["t.conllu", "t.conllu.gz"])
def test_words_and_tags_skip_multiword_tokens_and_empty_nodes(tmp_path, name):
    path = write(tmp_path, TEXT, name)
    first, second = read_conllu(path)
    assert first.words == ["Vamos", "a", "el", "mar", "."]
    assert first.tags == ["VERB", "ADP", "DET", "NOUN", "PUNCT"]
    assert (first.path, first.line) == (path, 4)
    assert (second.words, second.tags, second.line) == (["Hola"], ["INTJ"], 13)
    # another column, e.g. the lemmas
    assert read_conllu(path, column="lemma")[0].tags == ["ir", "a", "el", "mar", "."]


def test_the_last_sentence_needs_no_blank_line(tmp_path):
    path = write(tmp_path, TEXT.rstrip("\n"))  # the file ends on line 13
    assert [s.words for s in read_conllu(path)] == [["Vamos", "a", "el", "mar", "."], ["Hola"]]


@pytest.mark.parametrize(
    "line, message",
    [
        ("1\tVamos\tir\tVERB", "expected 10 tab-separated columns (CoNLL-U), found 4"),
        ("1 Vamos ir VERB _ _ _ _ _ _", "expected 10 tab-separated columns (CoNLL-U), found 1"),
        (row("x", "Vamos", "ir", "VERB"), "ID 'x' is not a word, a range (1-2) or an empty node"),
        (row("2", "Vamos", "ir", "VERB"), "word ID 2 where 1 was expected"),
        (row("1", "Vamos", "ir", "VRB"), "UPOS 'VRB' is not one of the 17 universal POS tags"),
        (row("1", "Vamos", "ir", "_"), "UPOS '_' is not one of the 17 universal POS tags"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    lines = TEXT.split("\n")
    lines[3] = line  # line 4
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(InputError) as error:
        read_conllu(path)
    assert str(error.value).startswith(f"{path}:4: {message}")  # then the line, if columns


def test_a_file_without_sentences(tmp_path):
    path = write(tmp_path, "# only a comment\n\n")
    with pytest.raises(InputError, match=r"t.conllu:1: no sentences in the file"):
        read_conllu(path)


def test_upos_task_reads_conllu_and_scores_word_accuracy(tmp_path):
    spec = task_spec("upos")
    assert (spec.head, spec.reader, spec.metric, len(spec.labels)) == (
        "tagging",
        "conllu",
        "accuracy",
        17,
    )
    assert spec.labels == UPOS_TAGS
    sentences = read_split(spec, write(tmp_path, TEXT), "dev")
    predictions = [["VERB", "ADP", "DET", "NOUN", "NOUN"], ["NOUN"]]  # 4 of 6 words right
    assert score(spec, sentences, predictions) == {"accuracy": pytest.approx(4 / 6)}
