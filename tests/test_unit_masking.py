"""ERNIE knowledge masking (data/unit_masking.py): whole units only, BERT's budget, the bits in
the shards travelling through instance building, and the phases switching the masking mode."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from muppets.data.instances import create_nsp_instances, pack_full_sentences
from muppets.data.masking import IGNORE_INDEX, MaskingConfig, mask_whole_words, num_to_predict
from muppets.data.shards import ShardedCorpus, ShardWriter, token_dtype, write_manifest
from muppets.data.unit_masking import mask_units, pack, unit_spans, unit_view, unpack

CLS, SEP, PAD, MASK = 1, 2, 0, 3
VOCAB = 200
CONTINUATION = np.arange(VOCAB) >= 150  # ids 150.. are "##" pieces
CONFIG = MaskingConfig(vocab_size=VOCAB, mask_id=MASK, special_ids=(PAD, CLS, SEP))


def test_unit_spans_of_a_hand_built_row():
    # [CLS] w1 w2 ##x w3 w4 [SEP] w5 w6: phrase "w2 ##x w3", and a link across [SEP] ignored
    tokens = np.array([CLS, 10, 11, 151, 12, 13, SEP, 14, 15])
    links = np.array([0, 0, 0, 0, 1, 0, 0, 1, 1], bool)  # w3 joins w2; w5's link follows [SEP]
    starts, ends = unit_spans(tokens, links, CONFIG, CONTINUATION)
    assert starts.tolist() == [1, 2, 5, 7]
    assert ends.tolist() == [2, 5, 6, 9]  # w5 w6 linked together, not to w4 across [SEP]


def test_pack_unpack_round_trip():
    ids = np.array([5, 65535, 70000, 7])
    packed = pack(ids, np.array([0, 1, 3, 2], np.uint8), bit=1)
    out, links = unpack(packed)
    assert out.tolist() == ids.tolist() and links.tolist() == [False, True, True, False]
    assert unpack(pack(ids, np.array([0, 1, 3, 2], np.uint8), bit=2))[1].tolist() == [0, 0, 1, 1]


def test_without_links_it_draws_exactly_whole_word_masking():
    rng = np.random.default_rng(0)
    for seed in range(50):
        row = np.concatenate(([CLS], rng.integers(4, VOCAB, 40), [SEP]))
        a = mask_units(row, np.random.default_rng(seed), CONFIG, CONTINUATION)
        b = mask_whole_words(row, np.random.default_rng(seed), CONFIG, CONTINUATION)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=60),
    link_seed=st.integers(0, 2**32 - 1),
    sep_at=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_unit_is_ever_partly_masked_and_the_budget_holds(pieces, link_seed, sep_at, seed):
    body = np.array(pieces)
    cut = min(sep_at, len(body))
    tokens = np.concatenate(([CLS], body[:cut], [SEP], body[cut:], [SEP]))
    links = np.random.default_rng(link_seed).random(len(tokens)) < 0.4
    packed = pack(tokens, links.astype(np.uint8), 1)
    ids, labels = mask_units(packed, np.random.default_rng(seed), CONFIG, CONTINUATION)
    chosen = labels != IGNORE_INDEX
    starts, ends = unit_spans(tokens, links, CONFIG, CONTINUATION)
    for s, e in zip(starts, ends, strict=True):
        assert chosen[s:e].all() or not chosen[s:e].any()  # whole units only
    budget = num_to_predict(len(tokens), CONFIG)
    assert chosen.sum() <= budget
    # the budget is met whenever a unit that still fits was left out
    sizes = ends - starts
    left = [sz for s, sz in zip(starts, sizes, strict=True) if not chosen[s]]
    assert chosen.sum() == budget or all(chosen.sum() + sz > budget for sz in left)
    assert np.array_equal(labels[chosen], tokens[chosen])  # labels are the plain ids
    assert not chosen[np.isin(tokens, (CLS, SEP))].any()
    assert ids.max() < VOCAB  # no link bit left in the model's input


def test_a_unit_larger_than_the_budget_is_never_masked_and_80_10_10_per_token():
    # 20 tokens: budget round(3.0) = 3; a 5-token entity and 15 one-token words
    tokens = np.concatenate(([CLS], np.arange(10, 28), [SEP]))
    links = np.zeros(20, np.uint8)
    links[2:6] = 2  # tokens 1..5 are one entity
    packed = pack(tokens, links, 2)
    counts = np.zeros(3)
    for seed in range(2000):
        ids, labels = mask_units(packed, np.random.default_rng(seed), CONFIG, CONTINUATION)
        chosen = labels != IGNORE_INDEX
        assert chosen.sum() == 3 and not chosen[1:6].any()
        counts += [(ids[chosen] == MASK).sum(), (ids[chosen] == tokens[chosen]).sum(), 0]
    share = counts / 6000
    assert abs(share[0] - 0.8) < 0.02 and abs(share[1] - 0.1) < 0.015


def write_units_corpus(directory, documents, units, kinds=("phrase",)):
    writer = ShardWriter(directory, VOCAB, shard_tokens=7, units=True)
    for doc, unit in zip(documents, units, strict=True):
        writer.write(
            np.array([i for s in doc for i in s]),
            np.array([len(s) for s in doc]),
            np.array([len(doc)]),
            np.array([[0, 1]]),
            units=np.array([b for s in unit for b in s], np.uint8),
        )
    write_manifest(
        directory,
        {
            "dtype": token_dtype(VOCAB).name,
            "tokenizer": {"fingerprint": "abc", "vocab_size": VOCAB},
            "sources": [{"path": "a.txt"}],
            "shards": writer.close(),
            "units": {k: {"source": "test"} for k in kinds},
        },
    )
    return ShardedCorpus(directory)


def test_units_in_shards_travel_through_instances_and_stay_whole(tmp_path):
    rng = np.random.default_rng(3)
    documents, units = [], []
    for _ in range(12):
        doc = [rng.integers(4, 150, rng.integers(3, 9)).tolist() for _ in range(3)]
        documents.append(doc)
        # phrase links (bit 1) on ~half the tokens, entity links (bit 2) elsewhere
        units.append([(rng.random(len(s)) < 0.5).astype(int) * 1 + 2 for s in doc])
    corpus = write_units_corpus(tmp_path, documents, units)
    assert corpus.unit_kinds == {"phrase": {"source": "test"}}
    assert len(corpus.shards) > 3  # units roll over with their tokens
    for d in range(len(documents)):
        assert [u.tolist() for u in corpus.units(d)] == [list(u) for u in units[d]]
    view = unit_view(corpus, "phrase")
    assert unpack(np.concatenate(view[4]))[1].tolist() == [bool(b & 1) for u in units[4] for b in u]
    instances = [
        inst
        for d in range(len(view))
        for inst in create_nsp_instances(
            view, d, np.random.default_rng(d), max_seq_length=16, cls_id=CLS, sep_id=SEP
        )
    ]
    instances += list(pack_full_sentences(view, max_seq_length=16, cls_id=CLS, sep_id=SEP))
    for k, inst in enumerate(instances):
        plain, links = unpack(inst.tokens)
        ids, labels = mask_units(inst.tokens, np.random.default_rng(k), CONFIG, CONTINUATION)
        chosen = labels != IGNORE_INDEX
        for s, e in zip(*unit_spans(plain, links, CONFIG, CONTINUATION), strict=True):
            assert chosen[s:e].all() or not chosen[s:e].any()
        assert ids.max() < VOCAB


def test_unit_view_names_the_missing_kind(tmp_path):
    import pytest

    from muppets.errors import InputError

    corpus = write_units_corpus(tmp_path, [[[5, 6]], [[7, 8]]], [[[0, 1]], [[0, 0]]])
    assert unit_view(corpus, "whole_word") is corpus
    with pytest.raises(InputError, match="masking 'entity' needs entity units .*have: phrase"):
        unit_view(corpus, "entity")


def test_shards_without_units_read_as_before_and_stale_unit_files_go(tmp_path):
    write_units_corpus(tmp_path, [[[5, 6, 7]], [[8, 9]]], [[[0, 1, 1]], [[0, 2]]])
    assert len(list(tmp_path.glob("shard-*-units.bin"))) == 1
    writer = ShardWriter(tmp_path, VOCAB, shard_tokens=7)  # the same directory, no units
    writer.write(
        np.array([5, 6, 7, 8, 9]), np.array([3, 2]), np.array([1, 1]), np.array([[0, 1], [0, 2]])
    )
    shards = writer.close()
    source = {"dtype": token_dtype(VOCAB).name, "sources": [{"path": "a.txt"}], "shards": shards}
    write_manifest(tmp_path, {**source, "tokenizer": {"fingerprint": "abc", "vocab_size": VOCAB}})
    corpus = ShardedCorpus(tmp_path)
    assert not list(tmp_path.glob("shard-*-units.bin")) and corpus.unit_kinds == {}
    assert [s.tolist() for s in corpus[1]] == [[8, 9]] and corpus.shards[0].units is None
