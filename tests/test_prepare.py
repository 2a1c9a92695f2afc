"""prepare_corpus and train_tokenizer: exact ids, exact manifest, byte-identical reruns."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from muppets.data.document_ids import read_ahead
from muppets.data.prepare import (
    PrepareConfig,
    TokenizerTrainConfig,
    prepare_corpus,
    train_tokenizer,
)
from muppets.data.shards import ShardedCorpus
from muppets.data.text import read_documents
from muppets.errors import ConfigError, InputError
from muppets.tokenization import load_tokenizer

SAMPLE = str(Path(__file__).resolve().parents[1] / "muppets" / "samples" / "wiki.train.txt")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", ".", "dog", "ran", "a", "##s", "keep", "inside", "next", "!"]


@pytest.fixture(scope="module")
def sample_tokenizer(tmp_path_factory):
    """A 1000-token WordPiece trained on the bundled sample (about a second)."""
    out = str(tmp_path_factory.mktemp("tokenizer"))
    tokenizer = train_tokenizer(TokenizerTrainConfig(inputs=[SAMPLE], out=out, vocab_size=1000))
    assert tokenizer.vocab_size == 1000
    return out


@pytest.fixture(scope="module")
def prepared_sample(sample_tokenizer, tmp_path_factory):
    """(output directory, manifest) of the bundled sample in shards of <= 200,000 tokens."""
    out = tmp_path_factory.mktemp("shards")
    return out, prepare([SAMPLE], sample_tokenizer, out, shard_tokens=200_000)


def tiny_vocab(tmp_path, extra=()):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIALS + WORDS + list(extra)) + "\n", encoding="utf-8")
    return str(path)


def prepare(inputs, tokenizer, out, **options):
    config = PrepareConfig(inputs=inputs, tokenizer=tokenizer, out=str(out), **options)
    return prepare_corpus(config)


def test_shards_hold_the_ids_of_each_segmented_sentence(sample_tokenizer, prepared_sample):
    out, manifest = prepared_sample
    corpus = ShardedCorpus(out)
    tokenizer = load_tokenizer(sample_tokenizer)
    documents = list(read_documents([SAMPLE]))
    assert len(corpus) == len(documents) == manifest["documents"] == 1023
    for i, document in enumerate(documents):
        assert [a.tolist() for a in corpus[i]] == tokenizer.encode_batch(document.sentences)
        assert corpus.source(i) == (SAMPLE, document.line)
    assert manifest["sentences"] == sum(len(d.sentences) for d in documents)
    # Shards roll over at document boundaries near shard_tokens; the tokenizer travels along.
    assert len(manifest["shards"]) == -(-manifest["tokens"] // 200_000)
    assert all(s["tokens"] <= 200_000 for s in manifest["shards"])
    assert load_tokenizer(out).fingerprint() == corpus.tokenizer_fingerprint
    assert corpus.dtype == np.uint16 and manifest["dtype"] == "uint16"


def test_two_runs_are_byte_identical(sample_tokenizer, prepared_sample, tmp_path):
    """Also across batch sizes and with reading in line: batching is invisible in the output."""
    first, manifest = prepared_sample
    options = {"batch_sentences": 999, "prefetch_batches": 0}
    prepare([SAMPLE], sample_tokenizer, tmp_path, shard_tokens=200_000, **options)
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4 * len(manifest["shards"]) + 5  # manifest and 4 tokenizer files
    for name in files:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_manifest_counts_on_a_hand_written_corpus(tmp_path):
    wiki = tmp_path / "w.txt"
    wiki.write_text(
        '<doc id="1" title="Cat">\nCat\n\nThe cat sat. A dog ran!\n\ufffd\n</doc>\n'
        '<doc id="2" title="Empty">\nEmpty\n</doc>\n'
        '<doc id="3" title="Noise">\n\ufffd\n\ufffd \ufffd\n</doc>\n',
        encoding="utf-8",
    )
    jsonl = tmp_path / "j.jsonl"
    jsonl.write_text('{"text": "Keep [SEP] inside. Next."}\n{"text": "Dogs."}\n')
    inputs = [str(wiki), str(jsonl)]
    manifest = prepare(inputs, tiny_vocab(tmp_path), tmp_path / "out")
    del manifest["tokenizer"]["fingerprint"], manifest["tokenizer"]["source"]
    assert manifest == {
        "format": "muppets-shards",
        "version": 1,
        "dtype": "uint16",
        "documents": 3,
        "sentences": 5,
        "tokens": 17,
        "skipped": {
            "empty_documents": 1,  # "Empty": only its title line
            "documents_without_tokens": 1,  # "Noise": U+FFFD is removed by the normalizer
            "sentences_without_tokens": 3,  # one in "Cat", two in "Noise"
            "lines_with_replaced_bytes": 0,
            "unsegmented_paragraphs": 0,
        },
        "tokenizer": {"vocab_size": 17, "lowercase": True},
        "reading": {"language": "en", "errors": "strict", "text_field": "text"},
        "sources": [
            {"path": str(wiki), "bytes": wiki.stat().st_size, "format": "wiki"},
            {"path": str(jsonl), "bytes": jsonl.stat().st_size, "format": "jsonl"},
        ],
        "shards": [{"name": "shard-00000", "documents": 3, "sentences": 5, "tokens": 17}],
    }
    corpus = ShardedCorpus(tmp_path / "out")
    # the cat sat . | a dog ran ! || keep [SEP] inside . | next . || dog ##s .
    assert [[a.tolist() for a in d] for d in corpus] == [
        [[5, 6, 7, 8], [11, 9, 10, 16]],
        [[13, 3, 14, 8], [15, 8]],
        [[9, 12, 8]],
    ]
    sources = [(str(wiki), 1), (str(jsonl), 1), (str(jsonl), 2)]
    assert [corpus.source(i) for i in range(3)] == sources
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["documents"] == 3 and on_disk["shards"] == corpus.manifest["shards"]


def test_other_pre_tokenizers_take_the_one_string_per_sentence_path(tmp_path):
    """The joined-document shortcut is only taken where it cannot change the ids."""
    text = tmp_path / "a.txt"
    text.write_text("The cat sat.A dog ran!\n\nDogs.\n")
    tokenizer = load_tokenizer(tiny_vocab(tmp_path))
    tokenizer.backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # "sat.A" stays one word
    tokenizer.save(tmp_path / "tok")
    prepare([str(text)], str(tmp_path / "tok"), tmp_path / "out")
    want = [tokenizer.encode_batch(d.sentences) for d in read_documents([str(text)])]
    assert [[a.tolist() for a in d] for d in ShardedCorpus(tmp_path / "out")] == want


def test_uint32_for_a_vocabulary_over_65536(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("The cat sat. Zebra!\n")
    vocab = tiny_vocab(tmp_path, [f"w{i}" for i in range(65_536)] + ["zebra"])
    manifest = prepare([str(text)], vocab, tmp_path / "out")
    assert (manifest["dtype"], manifest["tokenizer"]["vocab_size"]) == ("uint32", 65_554)
    assert (tmp_path / "out" / "shard-00000-tokens.bin").stat().st_size == 4 * 6
    assert [a.tolist() for a in ShardedCorpus(tmp_path / "out")[0]] == [[5, 6, 7, 8], [65553, 16]]


def test_train_tokenizer_streams_many_files(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("The cat sat on the mat.\n\nThe dogs sat.\n")
    config = TokenizerTrainConfig(
        inputs=[str(text), SAMPLE.replace("train", "valid")],
        out=str(tmp_path / "tok"),
        vocab_size=600,
        limit_alphabet=100,
    )
    tokenizer = train_tokenizer(config)
    assert tokenizer.vocab_size == 600
    assert load_tokenizer(tmp_path / "tok").fingerprint() == tokenizer.fingerprint()
    vocab = (tmp_path / "tok" / "vocab.txt").read_text().split("\n")
    assert vocab[:5] == SPECIALS and len(vocab) == 601


def test_read_ahead_keeps_order_raises_and_stops():
    assert list(read_ahead(iter(range(100)), 3)) == list(range(100))

    def failing():
        yield 1
        raise InputError("bad line", "a.txt", 7)

    reader = read_ahead(failing(), 2)
    assert next(reader) == 1
    with pytest.raises(InputError, match="a.txt:7: bad line"):
        next(reader)
    produced = []

    def endless():
        while True:
            produced.append(None)
            yield len(produced)

    reader = read_ahead(endless(), 2)
    assert [next(reader), next(reader)] == [1, 2]
    reader.close()  # the consumer stops early: the thread ends instead of blocking on the queue
    assert not [t for t in threading.enumerate() if t.name == "muppets-read-ahead"]
    assert len(produced) <= 2 + 2 + 1  # taken, queued, and one waiting to be queued


@pytest.mark.parametrize(
    "cls, options, field",
    [
        (PrepareConfig, {"shard_tokens": 0}, "shard_tokens"),
        (PrepareConfig, {"batch_sentences": 0}, "batch_sentences"),
        (PrepareConfig, {"prefetch_batches": -1}, "prefetch_batches"),
        (PrepareConfig, {"format": "xml"}, "format"),
        (PrepareConfig, {"errors": "ignore"}, "errors"),
        (PrepareConfig, {"inputs": []}, "inputs"),
        (TokenizerTrainConfig, {"vocab_size": 5}, "vocab_size"),
        (TokenizerTrainConfig, {"min_frequency": 0}, "min_frequency"),
    ],
)
def test_configs_name_the_bad_field(cls, options, field):
    required = {"inputs": ["a.txt"], "out": "out"}
    if cls is PrepareConfig:
        required["tokenizer"] = "tok"
    with pytest.raises(ConfigError, match=f"^{field}"):
        cls(**{**required, **options})
