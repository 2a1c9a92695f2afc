"""XLNet stream instances: A/B splits equal to a plain transcription of `_split_a_and_b`'s loops,
reuse parts that continue row by row, whole sentences, exact lengths, ranks, resume."""

import numpy as np
import pytest
import torch

from muppets.data.lm_streams import ArrayStream
from muppets.data.permutation import PermutationConfig
from muppets.data.xlnet_instances import XLNetBatches, _Row, instance_generator, split_a_and_b
from muppets.errors import ConfigError, InputError

PAD, SEP, CLS = 0, 1, 2
OFFSET = 10  # token id = stream position + OFFSET: ids say where they came from
CONFIG = PermutationConfig(seq_len=32, reuse_len=8, perm_size=4, num_predict=5, max_gram=3)


def sentence_ids(n: int, seed: int, longest: int = 12) -> np.ndarray:
    """Sentence number of each of n positions; lengths 1..longest (some over tot_len)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, size=n)
    return np.repeat(np.arange(n), lengths)[:n]


def stream(n: int = 1200, seed: int = 0, longest: int = 12) -> ArrayStream:
    return ArrayStream(np.arange(n) + OFFSET, sentence_ids(n, seed, longest))


def reference_split(sent, begin, tot_len, g):
    """`_split_a_and_b` read literally (position by position), with the same draws."""
    data_len = len(sent)
    end_idx, cut_points = begin + 1, []
    while end_idx < data_len:
        if sent[end_idx] != sent[end_idx - 1]:
            if end_idx - begin >= tot_len:
                break
            cut_points.append(end_idx)
        end_idx += 1
    a_begin = begin
    if not cut_points or float(torch.rand(1, generator=g)) < 0.5:
        label = 0
        if cut_points:
            a_end = cut_points[int(torch.randint(len(cut_points), (1,), generator=g))]
        else:
            a_end = end_idx
        b_len = max(1, tot_len - (a_end - a_begin))
        b_begin = int(torch.randint(data_len - b_len, (1,), generator=g))
        b_end = b_begin + b_len
        while b_begin > 0 and sent[b_begin - 1] == sent[b_begin]:
            b_begin -= 1
        while b_end < data_len - 1 and sent[b_end - 1] == sent[b_end]:
            b_end += 1
    else:
        label = 1
        a_end = cut_points[int(torch.randint(len(cut_points), (1,), generator=g))]
        b_begin, b_end = a_end, end_idx
    while a_end - a_begin + b_end - b_begin > tot_len:
        if a_end - a_begin > b_end - b_begin:
            a_end -= 1
        else:
            b_end -= 1
    return a_begin, a_end, b_begin, b_end, label


@pytest.mark.parametrize("longest", [3, 12, 200])  # 200: rows of a few huge sentences
def test_split_equals_the_reference_loops(longest):
    source = stream(3000, seed=longest, longest=longest)
    row = _Row(source, 0, len(source))
    parity = source.parity.astype(int)
    labels = []
    for seed in range(300):
        begin = int(np.random.default_rng(seed).integers(0, 2900))
        ours = split_a_and_b(row, begin, 29, torch.Generator().manual_seed(seed))
        want = reference_split(parity, begin, 29, torch.Generator().manual_seed(seed))
        assert ours == want, (seed, begin)
        assert ours[1] - ours[0] + ours[3] - ours[2] == 29
        labels.append(ours[4])
    if longest < 29:
        assert 0.4 < np.mean(labels) < 0.6


def starts_sentence(source: ArrayStream, position: int) -> bool:
    return position == 0 or source.parity[position] != source.parity[position - 1]


def test_instances_continue_row_by_row_with_whole_sentences():
    source = stream()
    batches = XLNetBatches(source, CONFIG, 3, sep_id=SEP, cls_id=CLS, pad_id=PAD, seed=1)
    n_step, R, tot = batches.n_step, CONFIG.reuse_len, CONFIG.rest - 3
    assert len(batches) == (n_step - 32) // 8 + 1
    for step in range(len(batches)):
        batch = batches.batch(0, step)
        assert batch["new_stream"].item() == (step == 0)
        for r in range(3):
            ids = batch["input_k"][r]
            start = r * n_step + step * R  # this row's reuse part: contiguous, after the last one
            assert ids[:R].tolist() == list(range(start + OFFSET, start + R + OFFSET))
            assert ids[-1] == CLS and (ids == SEP).sum() == 2 and (ids == PAD).sum() == 0
            seps = torch.nonzero(ids == SEP).flatten().tolist()
            a, b = ids[R : seps[0]] - OFFSET, ids[seps[0] + 1 : seps[1]] - OFFSET
            assert len(a) + len(b) == tot
            assert a[0] == start + R and torch.equal(a, torch.arange(a[0], a[0] + len(a)))
            if len(b):
                assert torch.equal(b, torch.arange(b[0], b[0] + len(b)))
                assert starts_sentence(source, int(b[0]))  # B starts a sentence
                assert r * n_step <= b[0] and b[-1] < (r + 1) * n_step  # from the same row
            if batch["is_next"][r]:
                assert starts_sentence(source, int(b[0])) and b[0] >= a[-1] + 1
            segments = batch["seg_id"][r].tolist()
            assert segments == [0] * (R + len(a) + 1) + [1] * (len(b) + 1) + [2]
            assert int(batch["target_mask"][r].sum()) == 5


def test_ranks_build_their_rows_of_the_same_batch():
    source = stream()
    whole = XLNetBatches(source, CONFIG, 4, sep_id=SEP, cls_id=CLS, pad_id=PAD, seed=3)
    halves = [
        XLNetBatches(
            source, CONFIG, 4, sep_id=SEP, cls_id=CLS, pad_id=PAD, seed=3, rank=k, world_size=2
        )
        for k in range(2)
    ]
    full = whole.batch(1, 2)
    assert full["input_ids"] is full["input_k"] and full["token_type_ids"] is full["seg_id"]
    parts = [h.batch(1, 2) for h in halves]
    for key in ("input_k", "perm_mask", "target_mapping", "target", "seg_id"):
        assert torch.equal(torch.cat([p[key] for p in parts]), full[key]), key


def test_resume_and_epochs():
    source = stream(600)
    batches = XLNetBatches(source, CONFIG, 2, sep_id=SEP, cls_id=CLS, pad_id=PAD)
    steps = len(batches)
    seen = [next(batches) for _ in range(steps + 1)]
    assert batches.state_dict() == {"epoch": 1, "step": 1}
    assert seen[steps]["new_stream"].item()
    # a new epoch: the same reuse parts, new targets and orders
    assert torch.equal(seen[steps]["input_k"][:, :8], seen[0]["input_k"][:, :8])
    assert not torch.equal(seen[steps]["perm_mask"], seen[0]["perm_mask"])
    resumed = XLNetBatches(source, CONFIG, 2, sep_id=SEP, cls_id=CLS, pad_id=PAD)
    resumed.load_state_dict({"epoch": 0, "step": 3})
    again = next(resumed)
    assert all(torch.equal(again[k], seen[3][k]) for k in again)
    with pytest.raises(InputError, match="step 99"):
        resumed.load_state_dict({"epoch": 0, "step": 99})


def run_starts_at_words(continuation) -> float:
    """Share of target runs (2+ tokens) that start at a word start (1 in 3 positions does)."""
    config = PermutationConfig(seq_len=64, reuse_len=32, perm_size=16, num_predict=8, max_gram=3)
    batches = XLNetBatches(
        stream(4000), config, 4, sep_id=SEP, cls_id=CLS, pad_id=PAD, continuation=continuation
    )
    word_start = torch.from_numpy((np.arange(5000) - OFFSET) % 3 == 0)
    hits = total = 0
    for step in range(len(batches)):
        batch = batches.batch(0, step)
        targets = batch["input_q"].bool()
        before = torch.nn.functional.pad(targets, (1, 0))[:, :-1]
        after = torch.nn.functional.pad(targets, (0, 1))[:, 1:]
        runs = targets & ~before & after  # first token of each run of 2+ targets
        hits += int(word_start[batch["input_k"]][runs].sum())
        total += int(runs.sum())
    return hits / total


def test_spans_start_at_words():
    continuation = ((np.arange(5000) - OFFSET) % 3 != 0) & (np.arange(5000) >= OFFSET)
    # spans start at words; a run can still begin with a fill-up token placed just before one
    assert run_starts_at_words(continuation) > 0.95  # 0.99 with these seeds
    assert run_starts_at_words(None) < 0.45  # 0.37: no preference, about 1 in 3
    batches = XLNetBatches(stream(), CONFIG, 2, sep_id=SEP, cls_id=CLS, pad_id=PAD)
    with pytest.raises(IndexError, match="step 72 out of range for 72 steps"):
        batches.batch(0, len(batches))


def test_generators_differ_by_every_coordinate():
    base = torch.rand(4, generator=instance_generator(0, 0, 0, 0))
    for coords in [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]:
        assert not torch.equal(base, torch.rand(4, generator=instance_generator(*coords)))


def test_bad_options():
    with pytest.raises(ConfigError, match="batch_size"):
        XLNetBatches(stream(), CONFIG, 3, sep_id=SEP, cls_id=CLS, pad_id=PAD, world_size=2)
    no_reuse = PermutationConfig(seq_len=32, reuse_len=0, perm_size=4, num_predict=5)
    with pytest.raises(ConfigError, match="reuse_len must be >= 1"):
        XLNetBatches(stream(), no_reuse, 2, sep_id=SEP, cls_id=CLS, pad_id=PAD)
    with pytest.raises(InputError, match="too few"):
        XLNetBatches(stream(100), CONFIG, 4, sep_id=SEP, cls_id=CLS, pad_id=PAD)


def test_bi_data_reads_each_row_backwards_in_the_second_half():
    source = stream()
    bi = XLNetBatches(source, CONFIG, 4, sep_id=SEP, cls_id=CLS, pad_id=PAD, bi_data=True)
    n_step, R = bi.n_step, CONFIG.reuse_len
    assert n_step == 1200 // 2  # B / 2 stream rows
    for step in (0, 3):
        batch = bi.batch(0, step)
        for f in range(2):
            forward, backward = batch["input_k"][f], batch["input_k"][2 + f]
            first = f * n_step + step * R
            assert forward[:R].tolist() == [first + t + OFFSET for t in range(R)]
            last = f * n_step + n_step - 1 - step * R  # the row read from its end
            assert backward[:R].tolist() == [last - t + OFFSET for t in range(R)]
            assert backward[R] == last - R + OFFSET  # A goes on backwards
    # each process: its forward rows, then the same rows backwards; every row as in one process
    one = XLNetBatches(source, CONFIG, 8, sep_id=SEP, cls_id=CLS, pad_id=PAD, bi_data=True)
    full = one.batch(0, 1)
    for rank in range(2):
        part = XLNetBatches(
            source,
            CONFIG,
            8,
            sep_id=SEP,
            cls_id=CLS,
            pad_id=PAD,
            bi_data=True,
            rank=rank,
            world_size=2,
        ).batch(0, 1)
        rows = [2 * rank, 2 * rank + 1, 4 + 2 * rank, 4 + 2 * rank + 1]
        for key in ("input_k", "perm_mask", "target_mapping"):
            assert torch.equal(part[key], full[key][rows]), key
    with pytest.raises(ConfigError, match=r"multiple of 2 x the number of processes \(2\)"):
        XLNetBatches(
            source, CONFIG, 6, sep_id=SEP, cls_id=CLS, pad_id=PAD, bi_data=True, world_size=2
        )
