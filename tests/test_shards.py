"""Shard writer and reader on hand-built documents: layout, rollover, rank split, checks."""

import json
import pickle

import numpy as np
import pytest

from muppets.data.shards import (
    ShardedCorpus,
    ShardWriter,
    shard_file,
    token_dtype,
    write_manifest,
)
from muppets.errors import InputError

# Five documents of sentences of ids; document lengths 6, 3, 10, 1, 4 tokens.
DOCUMENTS = [
    [[1, 2, 3], [4, 5, 6]],
    [[7, 8, 9]],
    [[10] * 4, [11] * 6],
    [[12]],
    [[13, 14], [15], [16]],
]


def write_corpus(directory, documents, shard_tokens, vocab_size=100, batch=2):
    """Write `documents` in batches of `batch` documents, as prepare_corpus does."""
    writer = ShardWriter(directory, vocab_size, shard_tokens)
    for start in range(0, len(documents), batch):
        chunk = documents[start : start + batch]
        sentences = [s for d in chunk for s in d]
        writer.write(
            np.array([i for s in sentences for i in s], np.int64),
            np.array([len(s) for s in sentences]),
            np.array([len(d) for d in chunk]),
            np.array([((start + k) % 2, 10 * (start + k) + 1) for k in range(len(chunk))]),
        )
    shards = writer.close()
    write_manifest(
        directory,
        {
            "dtype": token_dtype(vocab_size).name,
            "tokenizer": {"fingerprint": "abc", "vocab_size": vocab_size},
            "sources": [{"path": "a.txt"}, {"path": "b.txt"}],
            "shards": shards,
        },
    )
    return ShardedCorpus(directory)


def as_lists(document):
    return [a.tolist() for a in document]


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_round_trip_and_rollover_at_document_boundaries(tmp_path, batch):
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=8, batch=batch)
    assert [as_lists(d) for d in corpus] == DOCUMENTS
    assert [as_lists(corpus[i]) for i in range(len(corpus))] == DOCUMENTS
    assert as_lists(corpus[-1]) == DOCUMENTS[-1]
    # 6 | 3 would pass 8 -> new shard; 10 > 8 alone; 1 + 4 fit. Never split, same for any batch.
    shapes = [(s.num_documents, s.num_tokens) for s in corpus.shards]
    assert shapes == [(1, 6), (1, 3), (1, 10), (2, 5)]
    assert (len(corpus), corpus.num_sentences, corpus.num_tokens) == (5, 9, 24)
    last = corpus.shards[-1]
    assert last.sentence_offsets.tolist() == [0, 1, 3, 4, 5]
    assert last.document_offsets.tolist() == [0, 1, 4]
    assert last.tokens.tolist() == [12, 13, 14, 15, 16]
    assert [corpus.source(i) for i in range(5)] == [
        ("a.txt", 1),
        ("b.txt", 11),
        ("a.txt", 21),
        ("b.txt", 31),
        ("a.txt", 41),
    ]


def test_arrays_are_raw_files_in_the_manifest_dtype(tmp_path):
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=1000)
    assert len(corpus.shards) == 1
    tokens = np.fromfile(shard_file(tmp_path, 0, "tokens"), np.uint16)
    assert tokens.tolist() == [i for d in DOCUMENTS for s in d for i in s]
    documents = np.fromfile(shard_file(tmp_path, 0, "documents"), np.int64)
    assert documents.tolist() == [0, 2, 3, 5, 6, 9]
    assert corpus[0][0].dtype == np.uint16 and not corpus[0][0].flags.writeable


def test_dtype_follows_vocab_size(tmp_path):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    big = [[[70000, 1], [65535]]]
    corpus = write_corpus(tmp_path, big, shard_tokens=10, vocab_size=70001)
    assert corpus.dtype == np.uint32 and as_lists(corpus[0]) == big[0]
    assert shard_file(tmp_path, 0, "tokens").stat().st_size == 3 * 4


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_rank_split_covers_every_document_once(tmp_path, world_size):
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=8)
    seen = []
    for rank in range(world_size):
        split = corpus.for_rank(rank, world_size)
        for i in range(len(split)):
            assert as_lists(split[i]) == as_lists(corpus[split.global_index(i)])
            seen.append(split.global_index(i))
    assert sorted(seen) == list(range(len(corpus)))
    with pytest.raises(ValueError):
        corpus.for_rank(world_size, world_size)


def test_pickles_as_its_directory(tmp_path):
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=8)
    data = pickle.dumps(corpus)
    assert len(data) < 500  # the maps are reopened, not copied
    assert [as_lists(d) for d in pickle.loads(data)] == DOCUMENTS


def test_stale_shards_of_a_larger_run_are_removed(tmp_path):
    write_corpus(tmp_path, DOCUMENTS, shard_tokens=2)
    assert shard_file(tmp_path, 4, "tokens").exists()
    (tmp_path / "notes.bin").write_bytes(b"mine")
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=1000)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [
        f"shard-00000-{a}.bin" for a in ("documents", "sentences", "sources", "tokens")
    ]
    assert (tmp_path / "notes.bin").exists() and len(corpus) == 5


def test_bad_directories_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        ShardedCorpus(tmp_path)
    write_corpus(tmp_path, DOCUMENTS, shard_tokens=8)
    tokens = shard_file(tmp_path, 2, "tokens")
    tokens.write_bytes(tokens.read_bytes()[:-2])  # truncated
    with pytest.raises(InputError) as error:
        ShardedCorpus(tmp_path)
    assert error.value.path == str(tokens) and "18 bytes, expected 20" in error.value.message
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": "muppets-shards", "version": 99}))
    with pytest.raises(InputError, match="version 99, expected muppets-shards version 1"):
        ShardedCorpus(tmp_path)


def test_check_tokenizer(tmp_path):
    corpus = write_corpus(tmp_path, DOCUMENTS, shard_tokens=8)
    corpus.check_tokenizer("abc")
    with pytest.raises(InputError, match="made with tokenizer abc, not xyz"):
        corpus.check_tokenizer("xyz")
