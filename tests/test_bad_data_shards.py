"""Damaged shards and barren corpora stop with one line naming the file; nothing spins.

Every case runs under a deadline: before the content checks, a zeroed documents.bin made
pretraining look for instances forever (issue 19).
"""

import contextlib
import dataclasses
import itertools
import json
import signal

import numpy as np
import pytest
from test_shards import DOCUMENTS, write_corpus

from muppets.data.pretraining import (
    PretrainingBatches,
    PretrainingDataConfig,
    SpecialIds,
    evaluation_batches,
)
from muppets.data.shards import ShardedCorpus, shard_file
from muppets.errors import InputError

IDS = SpecialIds(pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=100)
CONFIG = PretrainingDataConfig(max_seq_length=16, batch_size=2, micro_batch_size=2, partitions=1)
REDO = "the file is corrupt; run `muppets prepare` again"


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise TimeoutError in the test if the block runs longer than `seconds` (a hang)."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line_error(run) -> InputError:
    with deadline(20), pytest.raises(InputError) as error:
        run()
    assert "\n" not in str(error.value)
    return error.value


def overwrite(path, index: int, value: int, dtype) -> None:
    array = np.fromfile(path, dtype)
    array[index] = value
    array.tofile(path)


def test_zeroed_documents_bin_is_named_instead_of_a_hang(tmp_path):
    write_corpus(tmp_path, DOCUMENTS, shard_tokens=100)  # one shard, offsets 0 2 3 5 6 9
    documents = shard_file(tmp_path, 0, "documents")
    documents.write_bytes(bytes(documents.stat().st_size))  # zeros, size unchanged

    def pretrain():
        next(PretrainingBatches(ShardedCorpus(tmp_path), CONFIG, IDS))

    error = one_line_error(pretrain)
    assert str(error) == (
        f"{documents}: document 0 has no sentences (offsets 0 -> 0; 5 such documents); {REDO}"
    )


def test_a_token_id_past_the_vocabulary_is_named(tmp_path):
    write_corpus(tmp_path, DOCUMENTS, shard_tokens=100, vocab_size=100)
    tokens = shard_file(tmp_path, 0, "tokens")
    overwrite(tokens, 7, 100, "<u2")  # the 8th token; ids must be < 100
    error = one_line_error(lambda: ShardedCorpus(tmp_path))
    assert str(error) == (
        f"{tokens}: token 7 has id 100, not below the vocabulary size 100; {REDO} "
        "(with this tokenizer)"
    )


@pytest.mark.parametrize(
    "array, index, value, message",
    [
        ("sentences", 2, 1, "sentence 1 has no tokens (offsets 3 -> 1; 1 such sentences)"),
        ("sentences", 9, 25, "sentence offsets end at 25, not at the shard's 24 tokens"),
        ("sentences", 0, 5, "sentence offsets start at 5, not 0"),
        ("documents", 5, 8, "document offsets end at 8, not at the shard's 9 sentences"),
        (
            "sources",
            4,
            2,
            "document 2 comes from file 2, line 21: not a line of the manifest's 2 files",
        ),
        (
            "sources",
            1,
            0,
            "document 0 comes from file 0, line 0: not a line of the manifest's 2 files",
        ),
    ],
)
def test_offsets_and_sources_are_checked_at_open(tmp_path, array, index, value, message):
    write_corpus(tmp_path, DOCUMENTS, shard_tokens=100)
    path = shard_file(tmp_path, 0, array)
    overwrite(path, index, value, "<i8")
    error = one_line_error(lambda: ShardedCorpus(tmp_path))
    assert str(error) == f"{path}: {message}; {REDO}"


def test_a_manifest_without_a_field_is_named(tmp_path):
    write_corpus(tmp_path, DOCUMENTS, shard_tokens=8)
    manifest = tmp_path / "manifest.json"
    body = json.loads(manifest.read_text())
    del body["shards"][1]["tokens"]
    manifest.write_text(json.dumps(body))
    error = one_line_error(lambda: ShardedCorpus(tmp_path))
    assert str(error) == f"{manifest}: manifest entry of shard 1: no 'tokens' field"
    del body["tokenizer"]
    manifest.write_text(json.dumps(body))
    assert str(one_line_error(lambda: ShardedCorpus(tmp_path))) == (
        f"{manifest}: manifest: no 'tokenizer' field"
    )


# Single one-token sentences: ALBERT's pairs need two tokens, so no document gives an instance.
ONE_TOKEN_DOCUMENTS = [[np.array([10 + d])] for d in range(6)]


def test_a_corpus_without_any_instance_stops_instead_of_spinning():
    config = dataclasses.replace(CONFIG, kind="sop")
    expected = (
        "part 0 of 1: a pass over its 6 documents gave no sop instance (each one sentence of one "
        "token?); check the corpus or use fewer partitions"
    )
    batches = PretrainingBatches(ONE_TOKEN_DOCUMENTS, config, IDS)
    assert str(one_line_error(lambda: next(batches))) == expected
    held_out = lambda: evaluation_batches(ONE_TOKEN_DOCUMENTS, config, IDS)  # noqa: E731
    assert str(one_line_error(held_out)) == expected
    empty = [[np.zeros(0, np.int64)] for _ in range(4)]  # packing: no token anywhere
    packing = dataclasses.replace(CONFIG, kind="full_sentences")
    error = one_line_error(lambda: next(PretrainingBatches(empty, packing, IDS)))
    assert "4 documents gave no full_sentences instance (documents without tokens?)" in str(error)


def test_a_sound_corpus_still_gives_batches(tmp_path):
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=8)
    with deadline(20):
        batches = list(itertools.islice(PretrainingBatches(corpus, CONFIG, IDS), 6))
    assert [b["input_ids"].shape[0] for b in batches] == [2] * 6
