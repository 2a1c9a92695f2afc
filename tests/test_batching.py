"""collate: exact tensors on hand-built instances."""

import numpy as np
import pytest
import torch

from muppets.data.batching import collate
from muppets.data.instances import Instance

PAD = 0
a = np.array


def pair(tokens, segments, label=None, lm_labels=None):
    lm = None if lm_labels is None else a(lm_labels)
    return Instance(a(tokens), a(segments), label, lm)


def test_collate_pads_pairs_with_labels_exactly():
    batch = collate(
        [
            pair([1, 5, 2, 6, 7, 2], [0, 0, 0, 1, 1, 1], 0, [-100, 5, -100, -100, 7, -100]),
            pair([1, 3, 2, 9, 2], [0, 0, 0, 1, 1], 1, [-100, 8, -100, -100, -100]),
        ],
        pad_id=PAD,
    )
    assert list(batch) == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
        "next_sentence_label",
    ]
    assert all(t.dtype == torch.int64 for t in batch.values())
    assert batch["input_ids"].tolist() == [[1, 5, 2, 6, 7, 2], [1, 3, 2, 9, 2, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]]
    assert batch["labels"].tolist() == [
        [-100, 5, -100, -100, 7, -100],
        [-100, 8, -100, -100, -100, -100],
    ]
    assert batch["next_sentence_label"].tolist() == [0, 1]


def test_collate_rounds_up_to_a_multiple_and_leaves_out_absent_labels():
    packed = Instance(a([1, 4, 5, 2], dtype=np.uint16), a([0, 0, 0, 0]))
    batch = collate([packed, Instance(a([1, 2]), a([0, 0]))], pad_id=7, pad_to_multiple_of=8)
    assert list(batch) == ["input_ids", "attention_mask", "token_type_ids"]
    assert batch["input_ids"].tolist() == [[1, 4, 5, 2, 7, 7, 7, 7], [1, 2, 7, 7, 7, 7, 7, 7]]
    assert batch["attention_mask"].sum(dim=1).tolist() == [4, 2]
    assert batch["input_ids"].dtype == torch.int64
    assert packed.tokens.tolist() == [1, 4, 5, 2]  # input untouched


def test_collate_refuses_mixed_and_empty_batches():
    with pytest.raises(ValueError, match="lm_labels"):
        collate([pair([1, 2], [0, 0], lm_labels=[-100, -100]), pair([1, 2], [0, 0])], pad_id=PAD)
    with pytest.raises(ValueError, match="label"):
        collate([pair([1, 2], [0, 0], 1), pair([1, 2], [0, 0])], pad_id=PAD)
    with pytest.raises(ValueError, match="empty"):
        collate([], pad_id=PAD)
