"""Corpus readers: exact documents, sentences and (path, line) on hand-written files."""

import gzip
from pathlib import Path

import pytest

import muppets.data.text as text_module
from muppets.data.text import (
    ReadStats,
    read_documents,
    read_lines,
    resolve_inputs,
    sniff_format,
    split_sentences,
)
from muppets.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "muppets" / "samples" / "wiki.train.txt"

TEXT = """First sentence here. Second one!
Another paragraph line.

Doc two only line.


\t
Dr. Smith went home. He slept.
"""

WIKI = """<doc id="1" url="u1" title="Alpha">
Alpha

Alpha is a letter. It comes first.
History.
</doc>
<doc id="2" url="u2" title="Empty">
Empty

</doc>
<doc id="3" url="u3" title="Gamma">
Not the title line.
</doc>
"""

JSONL = """{"text": "One. Two.\\n\\nThree.", "id": 0}

{"text": "", "id": 1}
{"body": "x", "text": "Four"}
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def triples(documents):
    return [(d.line, d.sentences, d.lines) for d in documents]


def test_plain_text_documents_sentences_and_lines(tmp_path):
    path = write(tmp_path, "a.txt", TEXT)
    stats = ReadStats()
    documents = list(read_documents([path], stats=stats))
    assert triples(documents) == [
        (1, ["First sentence here.", "Second one!", "Another paragraph line."], [1, 1, 2]),
        (4, ["Doc two only line."], [4]),
        (8, ["Dr. Smith went home.", "He slept."], [8, 8]),
    ]
    assert {d.path for d in documents} == {path}
    assert (stats.documents, stats.sentences, stats.skipped_documents) == (3, 6, 0)
    assert stats.bytes_read == len(TEXT.encode())
    assert stats.formats == {path: "text"}


def test_wiki_drops_the_title_line_and_counts_empty_documents(tmp_path):
    path = write(tmp_path, "w.txt", WIKI)
    stats = ReadStats()
    documents = list(read_documents([path], stats=stats))
    assert triples(documents) == [
        (1, ["Alpha is a letter.", "It comes first.", "History."], [4, 4, 5]),
        (11, ["Not the title line."], [12]),  # kept: it differs from the title
    ]
    assert (stats.skipped_documents, stats.first_skipped) == (1, f"{path}:7")
    assert stats.formats == {path: "wiki"}


def test_jsonl_text_field_and_paragraphs(tmp_path):
    path = write(tmp_path, "j.jsonl", JSONL)
    stats = ReadStats()
    documents = list(read_documents([path], stats=stats))
    assert triples(documents) == [(1, ["One.", "Two.", "Three."], [1, 1, 1]), (4, ["Four"], [4])]
    assert (stats.skipped_documents, stats.first_skipped) == (1, f"{path}:3")
    with pytest.raises(InputError) as error:  # line 1 has no "body"
        list(read_documents([path], text_field="body"))
    assert (error.value.path, error.value.line) == (path, 1)
    assert "no 'body' field (keys: text, id)" in str(error.value)


def test_unsegmented_documents_are_paragraphs(tmp_path):
    path = write(tmp_path, "a.txt", TEXT)
    documents = list(read_documents([path], segment=False))
    assert documents[0].sentences == ["First sentence here. Second one!", "Another paragraph line."]
    assert documents[0].lines == [1, 2]


def test_sniffing_and_forced_format(tmp_path):
    files = [write(tmp_path, n, c) for n, c in [("a", TEXT), ("b", WIKI), ("c", JSONL)]]
    assert [sniff_format(f) for f in files] == ["text", "wiki", "jsonl"]
    assert sniff_format(write(tmp_path, "d", "\n\n")) == "text"
    # Forced "text" reads WikiExtractor markup as text: <doc> lines become sentences.
    first = next(read_documents([files[1]], format="text"))
    assert first.sentences[0].startswith("<doc id=")


def test_many_files_and_globs_in_the_given_order(tmp_path):
    for name in ("b2.txt", "b1.txt"):
        write(tmp_path, name, f"From {name}.\n")
    a = write(tmp_path, "z.txt", "From z.txt.\n")
    files = resolve_inputs([a, str(tmp_path / "b*.txt")])
    assert [Path(f).name for f in files] == ["z.txt", "b1.txt", "b2.txt"]
    texts = [d.sentences[0] for d in read_documents([a, str(tmp_path / "b*.txt")])]
    assert texts == ["From z.txt.", "From b1.txt.", "From b2.txt."]


def test_crlf_and_byte_order_mark(tmp_path):
    path = write(tmp_path, "w.txt", b"\xef\xbb\xbfOne line.\r\n\r\nTwo.\r\n")
    assert triples(read_documents([path])) == [(1, ["One line."], [1]), (3, ["Two."], [3])]


@pytest.mark.parametrize(
    "name, content, line, message",
    [
        ("bad.jsonl", '{"text": "a"}\n{"text": \n', 2, "not valid JSON"),
        ("list.jsonl", '{"text": "a"}\n[1, 2]\n', 2, "expected a JSON object, got list"),
        ("num.jsonl", '{"text": 3}\n', 1, "'text' must be a string, got int"),
        ("open.txt", '<doc id="1" title="A">\nA\nText.\n', 1, "never closed"),
        ("outside.txt", '<doc id="1" title="A">\nText.\n</doc>\nStray.\n', 4, "outside <doc>"),
        ("nested.txt", '<doc id="1" title="A">\n<doc id="2" title="B">\n', 2, "inside the <doc>"),
        ("close.txt", "<doc>\n</doc>\n</doc>\n", 3, "without an opening"),
        ("latin1.txt", b"Fine line.\nCaf\xe9 au lait.\n", 2, "byte 4 of the line (0xe9)"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, line, message):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as error:
        list(read_documents([path]))
    assert (error.value.path, error.value.line) == (path, line)
    assert message in error.value.message
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_replace_policy_substitutes_and_counts(tmp_path):
    path = write(tmp_path, "latin1.txt", b"Fine line.\nCaf\xe9 au lait.\n")
    stats = ReadStats()
    documents = list(read_documents([path], errors="replace", stats=stats))
    assert documents[0].sentences == ["Fine line.", "Caf\ufffd au lait."]
    assert stats.replaced_lines == 1


def test_missing_inputs_and_empty_corpus(tmp_path):
    missing = str(tmp_path / "nope.txt")
    for inputs, where, message in [
        ([missing], missing, "no such file"),
        ([str(tmp_path / "*.none")], str(tmp_path / "*.none"), "the glob matches no files"),
        ([str(tmp_path)], str(tmp_path), "is a directory"),
    ]:
        with pytest.raises(InputError) as error:
            list(read_documents(inputs))
        assert (error.value.path, error.value.message[: len(message)]) == (where, message)
    blank = write(tmp_path, "blank.txt", "\n  \n\n")
    empty = write(tmp_path, "empty.jsonl", '{"text": " "}\n')
    with pytest.raises(InputError, match=r"no text in 2 input file\(s\) \(1 empty documents"):
        list(read_documents([blank, empty]))
    with pytest.raises(InputError) as error:
        list(read_documents([blank]))
    assert error.value.path == blank


def test_bundled_sample_counts():
    stats = ReadStats()
    documents = list(read_documents([str(SAMPLE)], stats=stats))
    assert (stats.documents, stats.skipped_documents) == (1023, 0)  # samples/README.md
    assert stats.bytes_read == SAMPLE.stat().st_size
    first = documents[0]
    assert (first.line, first.lines[0]) == (1, 4)  # title line 2 dropped, blank line 3
    assert first.sentences[0].startswith("Chen Zhili (; born November 1942) is a senior")
    assert all(s == s.strip() and s for d in documents for s in d.sentences)


def test_wide_spaces_do_not_crash_sentencex():
    # sentencex 1.0.32 panics on this line of wiki.train.04.txt (a capital between U+00A0s).
    line = "In the United States, the film was rated \xa0R\xa0. It sold\u3000well."
    assert split_sentences(line) == [
        "In the United States, the film was rated \xa0R\xa0. ",
        "It sold\u3000well.",
    ]


def test_a_paragraph_sentencex_fails_on_is_kept_whole_and_counted(tmp_path, monkeypatch):
    class Panic(BaseException):  # what pyo3 raises for a Rust panic
        pass

    def segment(language, paragraph):
        if "boom" in paragraph:
            raise Panic("index out of bounds")
        return [paragraph]

    monkeypatch.setattr(text_module.sentencex, "segment", segment)
    path = write(tmp_path, "a.txt", "Fine.\nA boom. B.\n\nboom again.\n")
    stats = ReadStats()
    documents = list(read_documents([path], stats=stats))
    assert [d.sentences for d in documents] == [["Fine.", "A boom. B."], ["boom again."]]
    assert (stats.unsegmented_paragraphs, stats.first_unsegmented) == (2, f"{path}:2")


def test_a_gz_corpus_is_read_decompressed_and_a_damaged_one_is_named(tmp_path):
    good = tmp_path / "good.txt.gz"
    with gzip.open(good, "wt", encoding="utf-8") as f:
        f.write("one line\nanother\n")
    assert [text for _, text in read_lines(str(good), "strict", ReadStats())] == [
        "one line",
        "another",
    ]
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip at all\n")
    with pytest.raises(InputError, match="not a readable gzip file") as caught:
        list(read_lines(str(bad), "strict", ReadStats()))
    assert caught.value.path == str(bad)
    truncated = tmp_path / "truncated.txt.gz"
    truncated.write_bytes(gzip.compress(b"one line\n" * 1000)[:40])
    with pytest.raises(InputError, match="not a readable gzip file"):
        list(read_lines(str(truncated), "strict", ReadStats()))
