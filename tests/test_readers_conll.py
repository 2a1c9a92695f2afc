"""CoNLL reader on hand-written snippets (no CoNLL-2003 text in the repository); counts on the real
files only when ../shared/data is here."""

from pathlib import Path

import pytest

from muppets.data.readers.conll import Sentence, read_conll
from muppets.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"

SNIPPET = """-DOCSTART- -X- -X- O

Ada NNP B-NP B-PER
Lovelace NNP I-NP I-PER
wrote VBD B-VP O
notes NNS B-NP O
. . O O

In IN B-PP O
Turin NNP B-NP B-LOC


-DOCSTART- -X- -X- O

Babbage NNP B-NP I-PER
"""


def write(tmp_path, text, name="a.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_sentences_words_tags_and_lines(tmp_path):
    path = write(tmp_path, SNIPPET)
    assert read_conll(path) == [
        Sentence(
            ["Ada", "Lovelace", "wrote", "notes", "."], ["B-PER", "I-PER", "O", "O", "O"], path, 3
        ),
        Sentence(["In", "Turin"], ["O", "B-LOC"], path, 9),
        Sentence(["Babbage"], ["I-PER"], path, 15),  # tags as written; no final blank line
    ]
    chunks = read_conll(path, tag_column=2)
    assert [s.tags for s in chunks] == [
        ["B-NP", "I-NP", "B-VP", "B-NP", "O"],
        ["B-PP", "B-NP"],
        ["B-NP"],
    ]


def test_tab_separated_two_column_files(tmp_path):
    path = write(tmp_path, "Ada\tB-PER\r\nsang\tO\r\n\r\n")
    assert read_conll(path) == [Sentence(["Ada", "sang"], ["B-PER", "O"], path, 1)]


def test_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "Ada NNP B-NP B-PER\nLovelace NNP I-NP\n")
    with pytest.raises(InputError) as e:
        read_conll(path, tag_column=3)
    assert str(e.value) == (
        f"{path}:2: expected at least 4 whitespace-separated columns (tag column 3), found 3: "
        "'Lovelace NNP I-NP'"
    )
    path = write(tmp_path, "Ada B-PER\nLovelace\n", name="b.txt")  # the last column lost
    with pytest.raises(InputError, match=r"b.txt:2: expected at least 2 whitespace-separated"):
        read_conll(path)
    path = write(tmp_path, "-DOCSTART- -X- -X- O\n\n\n", name="c.txt")
    with pytest.raises(InputError) as e:
        read_conll(path)
    assert str(e.value) == f"{path}:1: no sentences in the file"


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/conll2003 is not here")
def test_real_conll2003_counts():
    counts = {}
    for split in ("valid", "test"):
        sentences = read_conll(DATA / f"{split}.txt")
        counts[split] = (len(sentences), sum(len(s.words) for s in sentences))
    assert counts == {"valid": (3250, 51362), "test": (3453, 46435)}  # DATA.md section 5
