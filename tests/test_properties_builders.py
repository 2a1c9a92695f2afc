"""Property-based tests (hypothesis) of the pretraining data builders: masking keeps shapes, never
chooses a special token, labels exactly what it changed and stays within its budget; NSP / SOP
pairs and RoBERTa blocks keep every token of a document (none dropped, none invented) and their
lengths; shards with arbitrary bytes in a file open as a sound corpus or stop in one line naming
that file, and no pass over what opens spins.

The readers: test_properties_readers.py.
"""

import functools
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_shards import DOCUMENTS, write_corpus

from muppets.data.instances import (
    create_nsp_instances,
    create_sop_instances,
    pack_full_sentences,
)
from muppets.data.masking import (
    IGNORE_INDEX,
    MaskingConfig,
    mask_batch,
    mask_spans,
    mask_tokens,
    mask_whole_words,
    num_to_predict,
)
from muppets.data.ngram_masking import mask_ngrams
from muppets.data.pretraining import PretrainingBatches, PretrainingDataConfig, SpecialIds
from muppets.data.shards import ShardedCorpus, shard_file
from muppets.errors import MuppetsError

FAST = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
VOCAB, PAD, CLS, SEP, MASK = 30, 0, 2, 3, 4
SPECIALS = (PAD, 1, CLS, SEP, MASK)
CONTINUATION = np.arange(VOCAB) >= 20  # ids 20.. are "##" pieces


# A builder that spins fails the test (conftest.no_hang: 60 s) instead of hanging it.
pytestmark = pytest.mark.usefixtures("no_hang")


# ---------------------------------------------------------------- masking

ROW = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=40).map(np.array)
MASKERS = {
    "token": mask_tokens,
    "whole_word": functools.partial(mask_whole_words, continuation=CONTINUATION),
    "span": functools.partial(mask_spans, continuation=CONTINUATION),
    "ngram": functools.partial(mask_ngrams, continuation=CONTINUATION),
}


@pytest.mark.parametrize("kind", list(MASKERS))
@FAST
@given(
    tokens=ROW,
    probability=st.floats(0.01, 0.99),
    cap=st.none() | st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_masking_keeps_shapes_specials_and_its_budget(kind, tokens, probability, cap, seed):
    config = MaskingConfig(VOCAB, MASK, SPECIALS, probability, cap)
    original = tokens.copy()
    input_ids, labels = MASKERS[kind](tokens, np.random.default_rng(seed), config)
    assert np.array_equal(tokens, original)  # the input is only read
    assert input_ids.shape == labels.shape == tokens.shape
    assert input_ids.dtype == labels.dtype == np.int64
    chosen = labels != IGNORE_INDEX
    special = np.isin(tokens, SPECIALS)
    assert not (chosen & special).any()  # a special token is never chosen
    assert np.array_equal(labels[chosen], tokens[chosen])  # labels are the original ids
    assert np.array_equal(input_ids[~chosen], tokens[~chosen])  # nothing else changes
    assert ((input_ids >= 0) & (input_ids < VOCAB)).all()
    budget, candidates = num_to_predict(len(tokens), config), int((~special).sum())
    if kind == "token":  # exactly the budget, or every candidate when there are fewer
        assert chosen.sum() == min(budget, candidates)
    assert chosen.sum() <= min(budget, candidates)  # whole words and spans stop short of it
    if kind != "token":  # a word is taken whole or not at all
        for i in np.flatnonzero(chosen[1:] != chosen[:-1]) + 1:
            assert not (CONTINUATION[tokens[i]] and not special[i - 1] and not special[i])


@FAST
@given(
    rows=st.lists(ROW.map(lambda r: np.where(r == PAD, 5, r)), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_batch_masking_leaves_padding_and_equals_row_by_row(rows, seed):
    config = MaskingConfig(VOCAB, MASK, SPECIALS)
    T = max(len(r) for r in rows)
    batch = torch.full((len(rows), T), PAD, dtype=torch.long)
    for b, row in enumerate(rows):
        batch[b, : len(row)] = torch.from_numpy(row)
    row_masker = functools.partial(mask_tokens, config=config)
    input_ids, labels = mask_batch(
        batch, np.random.default_rng(seed), pad_id=PAD, mask_row=row_masker
    )
    rng = np.random.default_rng(seed)
    for b, row in enumerate(rows):
        one_ids, one_labels = mask_tokens(row, rng, config)
        assert np.array_equal(input_ids[b, : len(row)].numpy(), one_ids)
        assert np.array_equal(labels[b, : len(row)].numpy(), one_labels)
        assert (input_ids[b, len(row) :] == PAD).all() and (labels[b, len(row) :] == -100).all()


# ---------------------------------------------------------------- instances

SENTENCE = st.lists(st.integers(5, VOCAB - 1), min_size=1, max_size=8).map(np.array)
DOCUMENT = st.lists(SENTENCE, min_size=1, max_size=6)
CORPUS = st.lists(DOCUMENT, min_size=2, max_size=5)


def check_pair(instance, max_seq_length):
    """[CLS] A [SEP] B [SEP], segment 0 through the first [SEP]; returns (A, B)."""
    tokens, segments = instance.tokens, instance.segment_ids
    assert len(tokens) == len(segments) <= max_seq_length
    seps = np.flatnonzero(tokens == SEP)
    assert tokens[0] == CLS and len(seps) == 2 and seps[1] == len(tokens) - 1
    a, b = tokens[1 : seps[0]], tokens[seps[0] + 1 : -1]
    assert len(a) and len(b) and instance.label in (0, 1)
    assert np.array_equal(segments, np.r_[np.zeros(len(a) + 2), np.ones(len(b) + 1)])
    return a, b


@FAST
@given(corpus=CORPUS, length=st.integers(5, 40), short=st.floats(0, 1), seed=st.integers(0, 99))
def test_nsp_pairs_fit_and_are_well_formed(corpus, length, short, seed):
    rng = np.random.default_rng(seed)
    for d in range(len(corpus)):
        for instance in create_nsp_instances(
            corpus, d, rng, max_seq_length=length, cls_id=CLS, sep_id=SEP, short_seq_prob=short
        ):
            check_pair(instance, length)


@FAST
@given(corpus=CORPUS, seed=st.integers(0, 99))
def test_nsp_uses_every_sentence_of_a_document_once(corpus, seed):
    """With room for two documents (nothing truncated), the A sides and the real-next B sides
    of a document's pairs are its tokens, in order: the random B's put unused sentences back."""
    rng = np.random.default_rng(seed)
    room = 2 * sum(len(s) for d in corpus for s in d) + 3
    for d, document in enumerate(corpus):
        used = []
        for instance in create_nsp_instances(
            corpus, d, rng, max_seq_length=room, cls_id=CLS, sep_id=SEP, short_seq_prob=0
        ):
            a, b = check_pair(instance, room)
            used += [a] + ([b] if instance.label == 0 else [])
        assert np.array_equal(np.concatenate(used), np.concatenate(document))


@FAST
@given(corpus=CORPUS, length=st.integers(5, 60), short=st.floats(0, 1), seed=st.integers(0, 99))
def test_sop_pairs_are_in_document_and_lose_tokens_only_to_truncation(corpus, length, short, seed):
    rng = np.random.default_rng(seed)
    for d, document in enumerate(corpus):
        whole = np.concatenate(document)
        used = []
        for instance in create_sop_instances(
            corpus, d, rng, max_seq_length=length, cls_id=CLS, sep_id=SEP, short_seq_prob=short
        ):
            a, b = check_pair(instance, length)
            used.append(np.r_[b, a] if instance.label else np.r_[a, b])
        if len(whole) == 1:  # one sentence of one token: no pair can be cut from it
            assert used == []
        elif length - 3 >= 2 * len(whole) and short == 0:  # nothing truncated: every token
            assert np.array_equal(np.concatenate(used), whole)


@FAST
@given(corpus=CORPUS, length=st.integers(3, 20))
def test_full_sentence_blocks_keep_every_token_in_order(corpus, length):
    blocks = list(pack_full_sentences(corpus, max_seq_length=length, cls_id=CLS, sep_id=SEP))
    for block in blocks:
        assert len(block.tokens) <= length and block.tokens[0] == CLS and block.tokens[-1] == SEP
        assert block.tokens[1] != SEP  # a block never starts with the document separator
    inner = np.concatenate([b.tokens[1:-1] for b in blocks])
    assert np.array_equal(inner[inner != SEP], np.concatenate([s for d in corpus for s in d]))


# ---------------------------------------------------------------- damaged shards

IDS = SpecialIds(pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=100)
DATA = PretrainingDataConfig(max_seq_length=16, batch_size=2, micro_batch_size=2, partitions=1)


@FAST
@given(
    array=st.sampled_from(["tokens", "sentences", "documents", "sources"]),
    start=st.integers(0, 200),
    data=st.binary(min_size=1, max_size=64),
)
def test_arbitrary_bytes_in_a_shard_file_open_soundly_or_name_it(array, start, data, tmp_path):
    root = tmp_path / "shards"
    if not root.exists():
        write_corpus(root, DOCUMENTS, shard_tokens=100)
    path = shard_file(root, 0, array)
    original = path.read_bytes()
    start = min(start, len(original) - 1)
    damaged = original[:start] + data[: len(original) - start]
    path.write_bytes(damaged + original[len(damaged) :])  # the size is unchanged
    try:
        try:
            batches = PretrainingBatches(ShardedCorpus(root), DATA, IDS)
        except MuppetsError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
            return
        for _ in range(3):  # what opens gives batches (or stops saying why): it never spins
            batch = next(batches)
            assert int(batch["input_ids"].max()) < IDS.vocab_size
    except MuppetsError as error:
        assert "\n" not in str(error)
    finally:
        path.write_bytes(original)
