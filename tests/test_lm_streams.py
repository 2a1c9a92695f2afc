"""Transformer-XL streams: exact segments of a numbered stream, continuity across segments, the
short last segment, ext_len, ranks, shard-backed streams equal to their documents, resume."""

import numpy as np
import pytest
import torch

from muppets.data.lm_streams import (
    IGNORE_INDEX,
    ArrayStream,
    OrderedSegments,
    SegmentBatches,
    ShardStream,
)
from muppets.data.shards import ShardedCorpus, ShardWriter, token_dtype, write_manifest
from muppets.errors import ConfigError, InputError

EOS = 99


def test_hand_worked_segments():
    # 103 tokens 0..102, 4 streams of 25 (100, 101, 102 dropped), segments of 10: 10, 10, 4
    segments = OrderedSegments(ArrayStream(range(103)), batch_size=4, tgt_len=10)
    assert (segments.n_step, len(segments)) == (25, 3)
    first, second, last = list(segments)
    assert first["input_ids"][:, 0].tolist() == [0, 25, 50, 75]
    assert first["input_ids"][1].tolist() == list(range(25, 35))
    assert first["labels"][1].tolist() == list(range(26, 36))
    assert second["input_ids"][1].tolist() == list(range(35, 45))  # row 1 continues
    assert last["input_ids"][3].tolist() == [95, 96, 97, 98]  # short: n_step - 1 - 20 = 4
    assert last["labels"][3].tolist() == [96, 97, 98, 99]
    assert [s["new_stream"].item() for s in (first, second, last)] == [True, False, False]


@pytest.mark.parametrize(("n", "batch_size", "tgt_len"), [(103, 4, 10), (64, 2, 7), (50, 5, 9)])
def test_rows_continue_and_every_token_is_a_target_once(n, batch_size, tgt_len):
    ids = torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(n))
    segments = OrderedSegments(ArrayStream(ids), batch_size, tgt_len)
    inputs = torch.cat([s["input_ids"] for s in segments], dim=1)  # (B, n_step - 1)
    labels = torch.cat([s["labels"] for s in segments], dim=1)
    rows = ids[: segments.n_step * batch_size].view(batch_size, -1)  # the B contiguous rows
    assert torch.equal(inputs, rows[:, :-1])
    assert torch.equal(labels, rows[:, 1:])
    lengths = [s["input_ids"].shape[1] for s in segments]
    assert lengths[:-1] == [tgt_len] * (len(lengths) - 1) and 1 <= lengths[-1] <= tgt_len


def test_ext_len_reaches_back_without_targets():
    segments = OrderedSegments(ArrayStream(range(40)), batch_size=2, tgt_len=5, ext_len=3)
    first, second = segments.segment(0), segments.segment(1)
    assert first["input_ids"][0].tolist() == [0, 1, 2, 3, 4]  # nothing before position 0
    assert second["input_ids"][0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    assert second["labels"][0].tolist() == [IGNORE_INDEX] * 3 + [6, 7, 8, 9, 10]
    assert second["input_ids"][1].tolist() == [22, 23, 24, 25, 26, 27, 28, 29]


def test_ranks_split_the_rows():
    stream = ArrayStream(range(200))
    whole = list(OrderedSegments(stream, 4, 6))
    parts = [list(OrderedSegments(stream, 4, 6, rank=r, world_size=2)) for r in range(2)]
    for k, batch in enumerate(whole):
        joined = torch.cat([parts[0][k]["input_ids"], parts[1][k]["input_ids"]])
        assert torch.equal(joined, batch["input_ids"])


# ------------------------------------------------------------------------- shard streams
DOCUMENTS = [
    [[1, 2, 3], [4, 5]],
    [[6]],
    [[7, 8], [9, 10, 11, 12]],
    [[13]],
    [[14, 15, 16], [17], [18, 19]],
]


def write_shards(directory, documents, shard_tokens):
    writer = ShardWriter(directory, 100, shard_tokens)
    for d in documents:
        writer.write(
            np.array([i for s in d for i in s]),
            np.array([len(s) for s in d]),
            np.array([len(d)]),
            np.array([[0, 1]]),
        )
    write_manifest(
        directory,
        {
            "dtype": token_dtype(100).name,
            "tokenizer": {"fingerprint": "abc", "vocab_size": 100},
            "sources": [{"path": "a.txt"}],
            "shards": writer.close(),
        },
    )
    return ShardedCorpus(directory)


@pytest.mark.parametrize("eos_id", [None, EOS])
def test_shard_stream_is_the_documents_in_order(tmp_path, eos_id):
    corpus = write_shards(tmp_path, DOCUMENTS, shard_tokens=6)
    assert len(corpus.shards) > 2
    want, parity, flip = [], [], True  # parity flips at each sentence and each eos (sent_ids)
    for d in DOCUMENTS:
        for s in [*d, [eos_id]] if eos_id is not None else d:
            flip = not flip
            want += s
            parity += [flip] * len(s)
    stream = ShardStream(corpus, eos_id=eos_id)
    assert len(stream) == len(want)
    for start in range(len(want) + 1):
        for stop in range(start, len(want) + 1):
            assert stream.slice(start, stop).tolist() == want[start:stop], (start, stop)
            assert stream.sentence_parity(start, stop).tolist() == parity[start:stop]
    segments = OrderedSegments(stream, batch_size=3, tgt_len=2)
    rows = np.array(want[: segments.n_step * 3]).reshape(3, -1)
    assert torch.cat([s["input_ids"] for s in segments], 1).tolist() == rows[:, :-1].tolist()
    assert torch.cat([s["labels"] for s in segments], 1).tolist() == rows[:, 1:].tolist()


# ------------------------------------------------------------------------------ training
def test_batches_wrap_and_resume():
    segments = OrderedSegments(ArrayStream(range(60)), batch_size=2, tgt_len=8)  # 4 segments
    batches = SegmentBatches(segments)
    seen = [next(batches) for _ in range(6)]
    assert [b["new_stream"].item() for b in seen] == [True, False, False, False, True, False]
    assert torch.equal(seen[4]["input_ids"], seen[0]["input_ids"])
    assert batches.state_dict() == {"epoch": 1, "segment": 2}
    resumed = SegmentBatches(segments)
    resumed.load_state_dict({"epoch": 0, "segment": 3})
    assert torch.equal(next(resumed)["input_ids"], seen[3]["input_ids"])
    assert resumed.state_dict() == {"epoch": 1, "segment": 0}
    with pytest.raises(InputError, match="segment 9"):
        resumed.load_state_dict({"epoch": 0, "segment": 9})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ext_len": -1}, "ext_len must be >= 0, got -1"),
        ({"tgt_len": 0}, "tgt_len (0) must be >= 1"),
        ({"batch_size": 0}, "batch_size (0) and tgt_len"),
        ({"batch_size": 3, "world_size": 2}, "batch_size (3) must be a multiple"),
        ({"rank": 2, "world_size": 2}, "rank 2 is not in"),
    ],
)
def test_bad_options_name_themselves(kwargs, message):
    options = {"batch_size": 2, "tgt_len": 4, **kwargs}
    with pytest.raises(ConfigError) as error:
        OrderedSegments(ArrayStream(range(50)), **options)
    assert message in str(error.value)


def test_too_short_a_stream():
    with pytest.raises(InputError, match="3 tokens are too few for batch_size 2"):
        OrderedSegments(ArrayStream([1, 2, 3]), batch_size=2, tgt_len=4)


def test_prepared_shards_stream_into_both_models_batches(tiny_shards):
    """`muppets prepare` output: the stream is its documents with eos; XLNet rows come out of it."""
    from muppets.data.permutation import PermutationConfig
    from muppets.data.xlnet_instances import XLNetBatches

    corpus = ShardedCorpus(tiny_shards / "train")
    SEP = 3  # the eos between documents; XLNet's instances treat it as <sep>
    stream = ShardStream(corpus, eos_id=SEP)
    want = np.concatenate([np.concatenate([*d, [SEP]]) for d in corpus]).astype(np.int64)
    assert len(stream) == len(want) == corpus.num_tokens + len(corpus)
    assert np.array_equal(stream.slice(0, len(stream)), want)
    segments = OrderedSegments(stream, batch_size=4, tgt_len=32)
    rows = torch.from_numpy(want[: segments.n_step * 4].reshape(4, -1))
    assert torch.equal(torch.cat([s["input_ids"] for s in segments], 1), rows[:, :-1])
    config = PermutationConfig(seq_len=64, reuse_len=32, perm_size=32, num_predict=10)
    batches = XLNetBatches(stream, config, 4, sep_id=SEP, cls_id=2, pad_id=0)
    first, second = batches.batch(0, 0), batches.batch(0, 1)
    # row r's second reuse part is the stream right after its first one
    assert torch.equal(second["input_k"][:, :32], rows[:, 32:64])
    assert torch.equal(first["input_k"][:, :32], rows[:, :32])
