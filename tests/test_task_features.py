"""Task featurizers and batching on hand-built inputs: pair truncation, QA doc-stride windows and
their labels, first-subword NER labels, dynamic padding, length buckets, resumable epochs."""

import numpy as np
import pytest
import torch

from muppets.data.readers.conll import Sentence
from muppets.data.readers.squad import Answer, QAExample
from muppets.data.readers.tabular import Example
from muppets.data.task_features import (
    MEGA_BATCH,
    EpochBatches,
    bucketed_batches,
    classification_features,
    collate_features,
    qa_features,
    tagging_features,
    truncate_pair,
    window_starts,
)
from muppets.errors import InputError
from muppets.tasks.tag_decoding import align_first_subword
from muppets.tokenization.wordpiece import train_wordpiece

WORDS = "the a cat dog sat ran on in mat park river bank city north south east west old new".split()
CONTEXT = (
    "The old city sat on the north bank of the river . A new park ran east of the city , "
    "and the cat sat in the park . The dog ran west on the south bank of the river . "
    "In the east the river ran on past the old mat in the new city ."
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([CONTEXT.lower(), " ".join(WORDS)] * 4, vocab_size=90, min_frequency=1)


def test_truncate_pair_pops_from_the_longer_text_and_the_second_on_ties():
    assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7])
    assert truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])  # tie: b loses first
    assert truncate_pair([1, 2, 3], None, 2) == ([1, 2], [])


def test_classification_features_are_bert_pairs(tokenizer):
    t = tokenizer
    examples = [
        Example("the cat sat", "the dog ran", 1, "dev-0", "f", 2),
        Example("the cat sat on the mat in the park", "the dog", 0, "dev-1", "f", 3),
    ]
    a, b = t.encode("the cat sat"), t.encode("the dog ran")
    first, second = classification_features(examples, t, max_seq_length=9)
    assert first.input_ids.tolist() == [t.cls_id, *a, t.sep_id, *b, t.sep_id]
    assert first.token_type_ids.tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert first.targets == {"labels": 1} and len(second) == 9  # truncated to max_seq_length
    assert second.input_ids.tolist()[-3:] == [*t.encode("the dog"), t.sep_id]


def test_collate_pads_to_the_longest_of_the_batch_only(tokenizer):
    examples = [
        Example(text, None, 0.5 * n, f"d-{n}", "f", n)
        for n, text in enumerate(["cat", "the old cat sat on the mat", "dog ran"])
    ]
    features = classification_features(examples, tokenizer, max_seq_length=128)
    batch = collate_features(features, tokenizer.pad_id)
    T = max(len(f) for f in features)
    assert batch["input_ids"].shape == (3, T) and T < 12  # not padded to 128
    assert batch["attention_mask"].sum(1).tolist() == [len(f) for f in features]
    assert batch["input_ids"][0, len(features[0]) :].eq(tokenizer.pad_id).all()
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0, 0.5, 1]


def test_inference_buckets_are_sorted_and_training_buckets_are_sortish():
    lengths = np.random.default_rng(0).integers(3, 100, size=1000)
    batches = bucketed_batches(lengths, 8)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert (np.diff(lengths[flat]) <= 0).all()  # longest first, no batch mixes lengths
    train = bucketed_batches(lengths, 8, np.random.default_rng(1))
    assert sorted(np.concatenate(train).tolist()) == list(range(1000))
    assert [b.tolist() for b in train] == [
        b.tolist() for b in bucketed_batches(lengths, 8, np.random.default_rng(1))
    ]

    # Padding cost: tokens computed / real tokens, random batches vs sortish ones
    def waste(batches):
        return sum(len(b) * lengths[b].max() for b in batches) / lengths.sum()

    rng = np.random.default_rng(2)
    random_batches = np.array_split(rng.permutation(1000), 125)
    assert waste(train) < 1.05 < 1.5 < waste(random_batches)
    assert len(train) == 125 and MEGA_BATCH * 8 < 1000  # more than one mega-batch was mixed


def test_epoch_batches_resume_where_they_stopped(tokenizer):
    examples = [
        Example(" ".join(WORDS[: 1 + n % 9]), None, n % 2, f"t-{n}", "f", n) for n in range(30)
    ]
    features = classification_features(examples, tokenizer, 32)

    def collate(batch):
        return collate_features(batch, tokenizer.pad_id)

    whole = [b["input_ids"] for b in EpochBatches(features, 4, collate, 7, epochs=2)]
    assert len(whole) == 2 * 8
    source = EpochBatches(features, 4, collate, 7, epochs=2)
    it = iter(source)
    head = [next(it)["input_ids"] for _ in range(11)]
    again = EpochBatches(features, 4, collate, 7, epochs=2)
    again.load_state_dict(source.state_dict())
    rest = [b["input_ids"] for b in again]
    assert source.state_dict() == {"epoch": 1, "position": 3}
    assert all(torch.equal(x, y) for x, y in zip(head + rest, whole, strict=True))


def qa_example(answer: str, occurrence: int = 0, impossible: bool = False) -> QAExample:
    start = -1
    for _ in range(occurrence + 1):
        start = CONTEXT.index(answer, start + 1)
    answers = [] if impossible else [Answer(answer, start)]
    gold = [] if impossible else [answer]
    return QAExample("q1", "where did the dog run ?", CONTEXT, answers, gold, impossible, "f", 1)


def test_window_starts_cover_the_whole_context():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(4, 4, 3) == [0]
    assert window_starts(11, 4, 8) == [0, 4, 8]  # the stride never skips tokens


def test_qa_windows_cover_every_token_and_label_the_answer(tokenizer):
    example = qa_example("the south bank of the river")
    # Windows of 10 context tokens at a stride of 5: the 6-token answer lies wholly inside one.
    length = len(tokenizer.encode(example.question)) + 3 + 10
    features = qa_features([example], tokenizer, max_seq_length=length, doc_stride=5)
    n_context = len(tokenizer.encode(CONTEXT))
    assert len(features) > 4
    covered = set()
    for f in features:
        assert len(f) <= length and f.input_ids[0] == tokenizer.cls_id
        covered |= {tuple(o) for o, m in zip(f.token_offsets, f.context_mask, strict=True) if m}
    assert len(covered) == n_context  # every context token is in some window
    inside = [f for f in features if f.targets["start_positions"] > 0]
    outside = [f for f in features if f.targets["start_positions"] == 0]
    assert inside and outside
    for f in inside:  # start/end point at the answer's first and last tokens
        s, e = f.targets["start_positions"], f.targets["end_positions"]
        assert f.context_mask[s] and f.context_mask[e]
        offsets = f.token_offsets
        assert CONTEXT[offsets[s][0] : offsets[e][1]] == "the south bank of the river"
    for f in outside:  # the answer is not wholly inside: both labels at [CLS]
        assert f.targets == {"start_positions": 0, "end_positions": 0}
        chars = {
            c
            for (a, b), m in zip(f.token_offsets, f.context_mask, strict=True)
            if m
            for c in range(a, b)
        }
        answer = set(range(example.answers[0].char_start, example.answers[0].char_start + 27))
        assert not answer <= chars


def test_qa_unanswerable_and_unusable_answers(tokenizer):
    impossible = qa_example("", impossible=True)
    features = qa_features([impossible], tokenizer, max_seq_length=24, doc_stride=8)
    assert all(f.targets == {"start_positions": 0, "end_positions": 0} for f in features)
    dropped = QAExample("q2", "who ?", CONTEXT, [], ["zebra"], False, "f", 1)  # offset unusable
    assert all(not f.targets for f in qa_features([dropped], tokenizer, 24, 8))


def test_tagging_labels_first_subwords_and_splits_long_sentences(tokenizer):
    words = ["Riverbank", "cats", "sat", "northeast", "of", "Oldcity"]
    tags = ["B-LOC", "O", "O", "O", "O", "B-LOC"]
    labels = ["O", "B-LOC", "I-LOC"]
    sentence = Sentence(words, tags, "train.txt", 10)
    (feature,) = tagging_features([sentence], tokenizer, 64, labels)
    word_ids = [None if w < 0 else int(w) for w in feature.word_ids]
    want = align_first_subword(word_ids, [labels.index(t) for t in tags])
    assert feature.targets["labels"].tolist() == want
    assert len(feature) > len(words) + 2  # some words are several sub-tokens
    pieces = tagging_features([sentence], tokenizer, 7, labels)  # room for 5 sub-tokens
    assert len(pieces) > 1 and all(len(p) <= 7 for p in pieces)
    seen = [
        int(w)
        for p in pieces
        for w, y in zip(p.word_ids, p.targets["labels"], strict=True)
        if y != -100
    ]
    assert seen == list(range(len(words)))  # every word labelled once, in order
    bad = Sentence(words, ["B-LOC", "O", "B-PER", "O", "O", "O"], "train.txt", 10)
    with pytest.raises(InputError, match=r"train.txt:12: unknown tag 'B-PER'"):
        tagging_features([bad], tokenizer, 64, labels)
