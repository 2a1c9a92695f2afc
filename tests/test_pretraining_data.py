"""The pretraining batch source: world-size independence, exact resume, static vs dynamic masks."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from muppets.data.pretraining import (
    PretrainingBatches,
    PretrainingDataConfig,
    SpecialIds,
    _row_masker,
    evaluation_batches,
    mask_instance,
    part_instances,
)
from muppets.errors import ConfigError

IDS = SpecialIds(pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=100)


def corpus(n_documents=40, seed=0):
    rng = np.random.default_rng(seed)
    return [
        [rng.integers(5, 100, size=rng.integers(3, 30)) for _ in range(rng.integers(1, 8))]
        for _ in range(n_documents)
    ]


def rows(batches):
    """Every real row of some micro-batches as a hashable tuple (ids, labels, nsp label)."""
    out = []
    for b in batches:
        for i in range(len(b["input_ids"])):
            n = int(b["attention_mask"][i].sum())
            out.append(
                (
                    tuple(b["input_ids"][i, :n].tolist()),
                    tuple(b["labels"][i, :n].tolist()),
                    int(b["next_sentence_label"][i]) if "next_sentence_label" in b else None,
                )
            )
    return out


CONFIG = PretrainingDataConfig(
    max_seq_length=32, batch_size=8, micro_batch_size=2, partitions=4, dupe_factor=2
)


@pytest.mark.parametrize("kind", ["nsp", "sop", "full_sentences"])
def test_two_processes_see_the_same_global_batches_as_one(kind):
    config = dataclasses.replace(CONFIG, kind=kind)
    docs = corpus()
    one = PretrainingBatches(docs, config, IDS)
    ranks = [PretrainingBatches(docs, config, IDS, rank=r, world_size=2) for r in range(2)]
    assert one.accumulation == 4 and ranks[0].accumulation == 2
    for _ in range(5):  # five optimizer steps
        single = rows(itertools.islice(one, 4))
        split = rows(itertools.islice(ranks[0], 2)) + rows(itertools.islice(ranks[1], 2))
        assert len(single) == 8
        assert sorted(single) == sorted(split)


def test_resume_continues_exactly_without_replaying():
    docs = corpus()
    straight = PretrainingBatches(docs, CONFIG, IDS)
    first = list(itertools.islice(straight, 4 * 3 + 1))  # three steps and one micro-batch
    state = straight.state_dict()
    assert state == {"steps_done": 3, "micro_done": 1}
    expected = list(itertools.islice(straight, 20))
    resumed = PretrainingBatches(docs, CONFIG, IDS)
    resumed.load_state_dict(state)
    got = list(itertools.islice(resumed, 20))
    for a, b in zip(expected, got, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])
    assert rows(first[-1:]) != rows(got[:1])


def test_every_row_fits_and_padding_is_never_a_target():
    for batch in itertools.islice(PretrainingBatches(corpus(), CONFIG, IDS), 40):
        assert batch["input_ids"].shape[1] <= 32
        padding = batch["attention_mask"] == 0
        assert (batch["labels"][padding] == -100).all()
        assert (batch["input_ids"][padding] == IDS.pad_id).all()
        assert (batch["labels"] != -100).any(dim=1).all()  # every row predicts something


def epochs(config, docs, count):
    """Masked rows of part 0, one list per epoch."""
    mask = _row_masker(config, IDS, None)
    out = [[] for _ in range(count)]
    for epoch, index, instance in part_instances(docs, 0, config, IDS):
        if epoch >= count:
            return out
        out[epoch].append(tuple(mask_instance(mask, config, 0, epoch, index, instance).tokens))


def test_static_epochs_repeat_every_dupe_factor_epochs_and_dynamic_ones_do_not():
    docs = corpus(n_documents=12)
    static = epochs(dataclasses.replace(CONFIG, partitions=1, dupe_factor=2), docs, 3)
    assert static[0] == static[2] and static[0] != static[1]
    dynamic = epochs(dataclasses.replace(CONFIG, partitions=1, dynamic_masking=True), docs, 3)
    assert dynamic[0] == static[0]  # epoch 0 is the same either way
    assert dynamic[2] != dynamic[0]


def test_evaluation_batches_are_fixed_and_split_by_rank():
    docs = corpus()
    a = evaluation_batches(docs, CONFIG, IDS, max_instances=10)
    b = evaluation_batches(docs, CONFIG, IDS, max_instances=10)
    assert len(a) == 5 and rows(a) == rows(b)
    halves = [
        evaluation_batches(docs, CONFIG, IDS, max_instances=10, rank=r, world_size=2)
        for r in (0, 1)
    ]
    assert sorted(rows(halves[0]) + rows(halves[1])) == sorted(rows(a))


def test_partitions_must_divide_among_processes():
    with pytest.raises(ConfigError, match="partitions"):
        PretrainingBatches(corpus(), CONFIG, IDS, rank=0, world_size=3)
    with pytest.raises(ConfigError, match="batch_size"):
        PretrainingDataConfig(batch_size=10, partitions=4)
