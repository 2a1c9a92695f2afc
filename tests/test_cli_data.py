"""`muppets tokenizer train` and `muppets prepare` through the CLI: one clear line per mistake."""

from pathlib import Path

import pytest

from muppets.cli.main import main
from muppets.data.shards import ShardedCorpus
from muppets.tokenization import load_tokenizer

SAMPLE = str(Path(__file__).resolve().parents[1] / "muppets" / "samples" / "wiki.train.txt")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIALS + ["the", "cat", "sat", "."]) + "\n")
    return str(path)


def error_line(capsys) -> str:
    """The only stderr line; it must be the CLI's error line."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("muppets: error: ")
    return lines[0].removeprefix("muppets: error: ")


def test_missing_file(tmp_path, vocab, capsys):
    missing = str(tmp_path / "nope.txt")
    out = str(tmp_path / "out")
    assert main(["prepare", "--inputs", missing, "--tokenizer", vocab, "--out", out]) == 2
    assert error_line(capsys) == f"{missing}: no such file"
    assert main(["tokenizer", "train", "--inputs", SAMPLE, missing, "--out", out]) == 2
    assert error_line(capsys) == f"{missing}: no such file"


def test_empty_corpus(tmp_path, vocab, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n")
    out = str(tmp_path / "out")
    assert main(["prepare", "--inputs", str(blank), "--tokenizer", vocab, "--out", out]) == 2
    assert error_line(capsys) == f"{blank}: no text in 1 input file(s)"
    assert main(["tokenizer", "train", "--inputs", str(blank), "--out", out]) == 2
    assert error_line(capsys) == f"{blank}: no text in 1 input file(s)"


def test_bytes_that_are_not_utf8_then_errors_replace(tmp_path, vocab, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"The cat sat.\n\nThe caf\xe9 sat.\n")
    args = ["prepare", "--inputs", str(latin1), "--tokenizer", vocab, "--out", str(tmp_path)]
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith(f"{latin1}:3: byte 8 of the line (0xe9) is not UTF-8")
    assert main([*args, "--errors", "replace"]) == 0
    assert "replaced bytes that are not UTF-8 on 1 line(s)" in capsys.readouterr().out
    corpus = ShardedCorpus(tmp_path)
    assert corpus.manifest["skipped"]["lines_with_replaced_bytes"] == 1
    assert [a.tolist() for a in corpus[1]] == [[5, 1, 7, 8]]  # "caf" (U+FFFD is cleaned) is [UNK]


def test_vocabulary_without_the_special_tokens(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS[:4] + ["the", "cat"]) + "\n")  # no [MASK]
    args = ["prepare", "--inputs", SAMPLE, "--tokenizer", str(vocab), "--out", str(tmp_path)]
    assert main(args) == 2
    assert error_line(capsys) == f"{vocab}: vocabulary lacks the special token(s) [MASK]"


def test_unknown_config_key(tmp_path, vocab, capsys):
    config = tmp_path / "prepare.toml"
    config.write_text(f'inputs = ["{SAMPLE}"]\ntokenizer = "{vocab}"\nshard_size = 5\n')
    assert main(["prepare", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"{config}: unknown config key 'shard_size' (valid keys: ")
    assert "shard_tokens" in line


def test_train_then_prepare_on_the_sample(tmp_path, capsys):
    tok, out = str(tmp_path / "tok"), str(tmp_path / "shards")
    assert main(["tokenizer", "train", "--inputs", SAMPLE, "--out", tok, "--vocab-size=800"]) == 0
    assert (tmp_path / "tok" / "tokenizer-train.toml").is_file()
    args = ["prepare", "--inputs", SAMPLE, "--tokenizer", tok, "--out", out]
    assert main([*args, "--set", "shard_tokens=300000"]) == 0
    resolved = (tmp_path / "shards" / "prepare.toml").read_text()
    assert f'inputs = ["{SAMPLE}"]' in resolved and "shard_tokens = 300000" in resolved
    assert capsys.readouterr().err == ""
    corpus = ShardedCorpus(out)
    assert (len(corpus), corpus.vocab_size) == (1023, 800)
    assert len(corpus.shards) == -(-corpus.num_tokens // 300_000)
    corpus.check_tokenizer(load_tokenizer(tok).fingerprint())
