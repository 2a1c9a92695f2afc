"""Instances: exact seeded pairs on a tiny corpus, and invariants decoded from the tokens.

Generated corpora encode every token as 10 + doc * 10**6 + offset, where `offset` is the token's
place in its document, so each token tells which document it came from and where.
"""

from functools import partial

import numpy as np
import pytest

from muppets.data.instances import (
    Instance,
    create_nsp_instances,
    create_sop_instances,
    create_training_instances,
    pack_full_sentences,
)
from muppets.data.masking import IGNORE_INDEX, MaskingConfig, mask_tokens, num_to_predict
from muppets.errors import ConfigError, InputError

CLS, SEP = 1, 2
DOC = 10**6
a = np.array
TINY = [
    [a([10, 11, 12]), a([13, 14]), a([15, 16, 17, 18])],
    [a([20, 21]), a([22, 23, 24])],
    [a([30, 31, 32, 33]), a([34]), a([35, 36])],
]


def make_corpus(rng, n_docs, sentence_lengths):
    """Documents of 1..12 sentences whose lengths are drawn from `sentence_lengths`."""
    corpus = []
    for d in range(n_docs):
        lengths = rng.choice(sentence_lengths, size=int(rng.integers(1, 13)))
        ends = np.cumsum(lengths)
        corpus.append(
            [10 + d * DOC + np.arange(e - n, e) for n, e in zip(lengths, ends, strict=True)]
        )
    return corpus


def fixed_corpus(n_docs, n_sentences, length):
    return make_corpus_exact([[length] * n_sentences] * n_docs)


def make_corpus_exact(lengths_per_doc):
    corpus = []
    for d, lengths in enumerate(lengths_per_doc):
        ends = np.cumsum(lengths)
        corpus.append(
            [10 + d * DOC + np.arange(e - n, e) for n, e in zip(lengths, ends, strict=True)]
        )
    return corpus


def split(instance):
    """(A, B) of `[CLS] A [SEP] B [SEP]`, checking the layout and the segment ids on the way."""
    tokens, segments = instance.tokens, instance.segment_ids
    seps = np.flatnonzero(tokens == SEP)
    assert tokens[0] == CLS and len(seps) == 2 and seps[1] == len(tokens) - 1
    assert segments.tolist() == [0] * (seps[0] + 1) + [1] * (len(tokens) - seps[0] - 1)
    A, B = tokens[1 : seps[0]], tokens[seps[0] + 1 : -1]
    assert len(A) >= 1 and len(B) >= 1
    return A, B


def doc_of(tokens):
    return set(((tokens - 10) // DOC).tolist())


def offsets(tokens):
    return (tokens - 10) % DOC


def contiguous(tokens):
    """One document, consecutive offsets: an unbroken stretch of that document."""
    return len(doc_of(tokens)) == 1 and (np.diff(offsets(tokens)) == 1).all()


def test_nsp_exact_on_a_tiny_corpus_seeds_0_and_2():
    kw = dict(max_seq_length=10, cls_id=CLS, sep_id=SEP, short_seq_prob=0.0)
    got = create_nsp_instances(TINY, 0, np.random.default_rng(0), **kw)
    # Chunk [10 11 12][13 14][15..18] reaches 7 tokens; a_end = 2; B random from doc 1 (target 2);
    # [15..18] is put back, forms a one-sentence chunk, so B is random again (truncated by 2).
    assert [(i.tokens.tolist(), i.label) for i in got] == [
        ([1, 10, 11, 12, 13, 14, 2, 20, 21, 2], 1),
        ([1, 15, 16, 17, 18, 2, 20, 21, 22, 2], 1),
    ]
    got = create_nsp_instances(TINY, 0, np.random.default_rng(2), **kw)
    # a_end = 1, actual next; the longer B loses 13 (front) and 18 (back) to fit 7 tokens.
    assert [(i.tokens.tolist(), i.segment_ids.tolist(), i.label) for i in got] == [
        ([1, 10, 11, 12, 2, 14, 15, 16, 17, 2], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 0)
    ]


def test_sop_exact_on_a_tiny_corpus_seed_0():
    kw = dict(max_seq_length=10, cls_id=CLS, sep_id=SEP, short_seq_prob=0.0)
    got = create_sop_instances(TINY, 0, np.random.default_rng(0), **kw)
    # A = [10..14], B = [15..18], swapped; then the longer (B, now first) loses 10 and 14.
    assert [(i.tokens.tolist(), i.segment_ids.tolist(), i.label) for i in got] == [
        ([1, 15, 16, 17, 18, 2, 11, 12, 13, 2], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1], 1)
    ]


def test_full_sentences_exact():
    blocks = pack_full_sentences(TINY, max_seq_length=8, cls_id=CLS, sep_id=SEP)
    assert [b.tokens.tolist() for b in blocks] == [
        [1, 10, 11, 12, 13, 14, 2],
        [1, 15, 16, 17, 18, 2],  # "2 20 21" would make 7 > 6
        [1, 20, 21, 22, 23, 24, 2],
        [1, 30, 31, 32, 33, 34, 2],
        [1, 35, 36, 2],
    ]
    corpus = [[a([10, 11])], [a([20, 21, 22])], [np.arange(30, 45)]]
    blocks = list(pack_full_sentences(corpus, max_seq_length=9, cls_id=CLS, sep_id=SEP))
    assert [b.tokens.tolist() for b in blocks] == [
        [1, 10, 11, 2, 20, 21, 22, 2],  # documents joined by an extra [SEP]
        [1, *range(30, 37), 2],  # a 15-token sentence cut into 7 + 7 + 1
        [1, *range(37, 44), 2],
        [1, 44, 2],
    ]
    assert all(b.label is None and not b.segment_ids.any() for b in blocks)


LONG = list(range(1, 40)) + [150, 300, 700]  # sentence lengths, some beyond max_seq_length


@pytest.mark.parametrize("create", [create_nsp_instances, create_sop_instances])
def test_pairs_fit_and_decode_to_stretches_of_the_right_documents(create):
    rng = np.random.default_rng(7)
    corpus = make_corpus(rng, 300, LONG)
    before = [[s.copy() for s in doc] for doc in corpus]
    for max_seq_length in (8, 64, 128):
        for d in range(len(corpus)):
            for instance in create(
                corpus, d, rng, max_seq_length=max_seq_length, cls_id=CLS, sep_id=SEP
            ):
                assert len(instance.tokens) <= max_seq_length
                A, B = split(instance)
                assert contiguous(A) and contiguous(B)
                first, second = (
                    (B, A) if create is create_sop_instances and instance.label else (A, B)
                )
                assert doc_of(first) == {d}
                if create is create_nsp_instances and instance.label == 1:
                    assert doc_of(B) != {d}  # a random next is never from A's document
                else:
                    assert doc_of(second) == {d} and offsets(first)[-1] < offsets(second)[0]
    assert all(
        all((s == t).all() for s, t in zip(x, y, strict=True))
        for x, y in zip(corpus, before, strict=True)
    )


@pytest.mark.parametrize("create", [create_nsp_instances, create_sop_instances])
def test_each_sentence_is_used_once_and_positives_are_adjacent(create):
    # 5-token sentences and a target of 40 tokens: chunks end exactly at 40, nothing is truncated.
    # NSP puts the unused sentences of a random-next chunk back; SOP never drops any.
    corpus = fixed_corpus(200, 11, 5)
    rng = np.random.default_rng(8)
    for d in range(len(corpus)):
        seen = []
        for instance in create(
            corpus, d, rng, max_seq_length=43, cls_id=CLS, sep_id=SEP, short_seq_prob=0
        ):
            A, B = split(instance)
            first, second = (B, A) if create is create_sop_instances and instance.label else (A, B)
            own = [first] if create is create_nsp_instances and instance.label else [first, second]
            assert offsets(first)[0] % 5 == 0 and all(len(x) % 5 == 0 for x in own)
            if len(own) == 2:  # B directly after A (NSP positive), or A directly after B (SOP swap)
                assert contiguous(np.concatenate(own))
            seen += np.concatenate(own).tolist()
        assert sorted(seen) == np.concatenate(corpus[d]).tolist()


def test_nsp_labels_are_balanced_where_google_gives_a_choice():
    # A one-sentence chunk (here: only the last sentence of a document, since no sentence reaches
    # the 125-token target alone) is always a random next, as in google's code; every other chunk
    # flips a fair coin. Binomial bounds at 4 sigma.
    rng = np.random.default_rng(9)
    corpus = make_corpus(rng, 2000, np.arange(1, 21))
    coin, forced = [], []
    for d in range(len(corpus)):
        last = set(corpus[d][-1].tolist())
        for instance in create_nsp_instances(
            corpus, d, rng, max_seq_length=128, cls_id=CLS, sep_id=SEP, short_seq_prob=0
        ):
            A, _ = split(instance)
            (forced if last & set(A.tolist()) else coin).append(instance.label)
    assert set(forced) == {1}
    n = len(coin)
    assert n > 2500
    assert abs(sum(coin) - n / 2) < 4 * np.sqrt(n / 4)


def test_sop_labels_are_balanced_and_one_sentence_chunks_are_cut_inside():
    rng = np.random.default_rng(10)
    corpus = make_corpus(rng, 2000, np.arange(1, 21))
    labels = []
    for d in range(len(corpus)):
        labels += [
            i.label
            for i in create_sop_instances(
                corpus, d, rng, max_seq_length=128, cls_id=CLS, sep_id=SEP
            )
        ]
    n = len(labels)
    assert n > 2000 and abs(sum(labels) - n / 2) < 4 * np.sqrt(n / 4)
    # One 10-token sentence: A and B are its two halves around a random cut, maybe swapped.
    (instance,) = create_sop_instances(
        [[np.arange(10, 20)]],
        0,
        np.random.default_rng(0),
        max_seq_length=64,
        cls_id=CLS,
        sep_id=SEP,
    )
    A, B = split(instance)
    assert np.concatenate((B, A) if instance.label else (A, B)).tolist() == list(range(10, 20))


def test_full_sentences_fit_keep_every_token_and_fill_greedily():
    rng = np.random.default_rng(11)
    corpus = make_corpus(rng, 300, LONG)
    corpus[5] = []  # an empty document adds no separator
    max_seq_length = 64
    blocks = list(
        pack_full_sentences(corpus, max_seq_length=max_seq_length, cls_id=CLS, sep_id=SEP)
    )
    content = []
    for block in blocks:
        tokens = block.tokens
        assert len(tokens) <= max_seq_length and tokens[0] == CLS and tokens[-1] == SEP
        assert tokens[1] != SEP  # never starts with the document separator
        body = tokens[1:-1]
        for k in np.flatnonzero(body == SEP):  # separators sit exactly between documents
            assert min(doc_of(body[k + 1 : k + 2])) > max(doc_of(body[k - 1 : k]))
            assert offsets(body[k + 1 : k + 2])[0] == 0
        words = body[body != SEP]
        assert all(contiguous(words[(words - 10) // DOC == x]) for x in doc_of(words))
        content += words.tolist()
    assert content == np.concatenate([s for doc in corpus for s in doc]).tolist()
    # Greedy: the next block's first piece (plus a separator if it opens a document) did not fit.
    budget = max_seq_length - 2
    where = {t: (s, k) for doc in corpus for s in doc for k, t in enumerate(s.tolist())}
    for block, after in zip(blocks, blocks[1:], strict=False):
        body, start = block.tokens[1:-1], int(after.tokens[1])
        sentence, k = where[start]
        assert k % budget == 0  # a block opens on a sentence, or on a budget-sized cut of one
        piece = min(budget, len(sentence) - k)
        opens_document = doc_of(after.tokens[1:2]) != doc_of(body[-1:])
        assert len(body) + opens_document + piece > budget


def test_training_instances_duplicate_shuffle_and_mask():
    corpus = fixed_corpus(10, 8, 5)  # SOP, target 40: exactly one instance per document per pass
    config = MaskingConfig(vocab_size=11 * DOC, mask_id=3, special_ids=(0, CLS, SEP))
    make = partial(
        create_sop_instances, max_seq_length=43, cls_id=CLS, sep_id=SEP, short_seq_prob=0
    )
    rng = np.random.default_rng(12)
    instances = create_training_instances(
        corpus, rng, make, dupe_factor=3, mask=partial(mask_tokens, config=config)
    )
    assert len(instances) == 30
    docs = []
    for instance in instances:
        predicted = instance.lm_labels != IGNORE_INDEX
        assert predicted.sum() == num_to_predict(43, config)
        original = np.where(predicted, instance.lm_labels, instance.tokens)
        A, B = split(Instance(original, instance.segment_ids))
        assert contiguous(np.concatenate((B, A) if instance.label else (A, B)))
        docs.append(min(doc_of(A)))
    assert sorted(docs) == sorted(list(range(10)) * 3) and docs != sorted(docs)  # shuffled
    # The three passes over a document differ: cut, swap and mask are drawn afresh.
    assert (
        len({tuple(i.tokens.tolist()) for i, d in zip(instances, docs, strict=True) if d == 0}) == 3
    )


def test_bad_inputs_are_named():
    kw = dict(cls_id=CLS, sep_id=SEP)
    with pytest.raises(InputError, match="at least 2 documents"):
        create_nsp_instances(TINY[:1], 0, np.random.default_rng(0), max_seq_length=10, **kw)
    with pytest.raises(ConfigError, match="max_seq_length"):
        create_nsp_instances(TINY, 0, np.random.default_rng(0), max_seq_length=4, **kw)
    make = partial(create_nsp_instances, max_seq_length=10, **kw)
    with pytest.raises(InputError, match="1 empty documents"):
        create_training_instances([*TINY, []], np.random.default_rng(0), make)
    assert isinstance(
        create_sop_instances(TINY, 0, np.random.default_rng(0), max_seq_length=10, **kw)[0],
        Instance,
    )
