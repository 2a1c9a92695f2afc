"""XLNet permutation-LM instances: the attention rules of `_local_perm` checked entry by entry,
hand-worked masks, span and target invariants over many seeds, and bad configs."""

import pytest
import torch

from muppets.data.permutation import (
    IGNORE_INDEX,
    SEG_A,
    SEG_B,
    SEG_CLS,
    SEG_PAD,
    PermutationConfig,
    assemble,
    collate_permutation,
    factorization_order,
    permutation_instance,
    permutation_mask,
    sample_span_mask,
    sample_spans,
)
from muppets.errors import ConfigError

PAD, CLS, SEP = 0, 2, 3
SMALL = PermutationConfig(seq_len=32, reuse_len=8, perm_size=4, num_predict=6, max_gram=3)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_instance(config: PermutationConfig, seed: int) -> tuple[dict, dict]:
    """A random (assembled, built) pair; A and B of random lengths, so some rows are padded."""
    g = generator(10_000 + seed)
    rest = config.rest - 3
    n_reuse = int(torch.randint(config.reuse_len // 2, config.reuse_len + 1, (1,), generator=g))
    n_a = int(torch.randint(1, rest, (1,), generator=g))
    n_b = int(torch.randint(0, rest - n_a + 1, (1,), generator=g))
    words = lambda n: torch.randint(10, 99, (n,), generator=g).tolist()  # noqa: E731
    parts = assemble(
        words(n_reuse), words(n_a), words(n_b), config, sep_id=SEP, cls_id=CLS, pad_id=PAD
    )
    built = permutation_instance(
        parts["input_ids"],
        config,
        generator(seed),
        sep_id=SEP,
        cls_id=CLS,
        attention_mask=parts["attention_mask"],
    )
    return parts, built


# ------------------------------------------------------------------------- the mask's rules
def expected_entry(i, j, is_target, is_func, order) -> int:
    """_local_perm's rules written case by case (module docstring of permutation.py)."""
    visible_j = not is_target[j] and not is_func[j]
    if visible_j:
        return 0  # ordinary context is seen by everyone
    if not is_target[i] and not is_func[i]:
        return 1  # ordinary context never sees a target or <sep>/<cls>
    if is_target[i]:
        return 0 if order[j] < order[i] else 1  # strictly earlier: never itself
    return 0 if order[j] <= order[i] else 1  # <sep>/<cls>: earlier ones and itself


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_every_entry_follows_the_rules(n):
    for seed in range(60):
        g = generator(seed)
        is_func = torch.rand(n, generator=g) < 0.2
        is_target = (torch.rand(n, generator=g) < 0.4) & ~is_func
        order = torch.randperm(n, generator=g)
        mask = permutation_mask(is_target, is_func, order)
        for i in range(n):
            for j in range(n):
                want = expected_entry(i, j, is_target.tolist(), is_func.tolist(), order.tolist())
                assert mask[i, j] == want, (seed, i, j)


def test_hand_worked_mask():
    # positions 0..4: ordinary, target, ordinary, target, <cls>; order over the hidden ones:
    # 1 (place 0), then <cls> 4 (place 1), then 3 (place 2)
    is_target = torch.tensor([False, True, False, True, False])
    is_func = torch.tensor([False, False, False, False, True])
    order = torch.tensor([3, 0, 4, 2, 1])
    want = [
        [0, 1, 0, 1, 1],  # ordinary: sees ordinary tokens only
        [0, 1, 0, 1, 1],  # first target: sees no hidden token, not even itself
        [0, 1, 0, 1, 1],
        [0, 0, 0, 1, 0],  # last target: sees 1 and <cls>, not itself
        [0, 0, 0, 1, 0],  # <cls>: sees 1 and itself
    ]
    assert permutation_mask(is_target, is_func, order).tolist() == want


def test_mask_is_batched():
    g = generator(0)
    is_func = torch.rand(4, 6, generator=g) < 0.2
    is_target = (torch.rand(4, 6, generator=g) < 0.5) & ~is_func
    order = torch.stack([torch.randperm(6, generator=g) for _ in range(4)])
    batched = permutation_mask(is_target, is_func, order)
    for b in range(4):
        assert torch.equal(batched[b], permutation_mask(is_target[b], is_func[b], order[b]))


def test_factorization_order_shares_one_permutation_across_blocks():
    order = factorization_order(12, 4, generator(3))
    sigma = torch.randperm(4, generator=generator(3))
    assert order.tolist() == [b * 4 + s for b in range(3) for s in sigma.tolist()]
    assert sorted(order.tolist()) == list(range(12))
    with pytest.raises(ConfigError, match="perm_size"):
        factorization_order(10, 4, generator(0))


# ------------------------------------------------------------------------------ assembling
def test_assemble_pads_each_part_on_the_left_and_ends_with_cls():
    config = PermutationConfig(seq_len=16, reuse_len=4, perm_size=4, num_predict=2)
    parts = assemble([20, 21, 22], [30, 31], [40, 41, 42], config, sep_id=SEP, cls_id=CLS, pad_id=0)
    P, A, B, C = SEG_PAD, SEG_A, SEG_B, SEG_CLS
    assert parts["input_ids"].tolist() == [0, 20, 21, 22, 0, 0, 0, 0, 30, 31, 3, 40, 41, 42, 3, 2]
    assert parts["seg_id"].tolist() == [P, A, A, A, P, P, P, P, A, A, A, B, B, B, B, C]
    assert parts["attention_mask"].tolist() == [0, 1, 1, 1, 0, 0, 0, 0] + [1] * 8
    with pytest.raises(ValueError, match="do not fit"):
        assemble([1] * 5, [], [], config, sep_id=SEP, cls_id=CLS, pad_id=0)


# ------------------------------------------------------------------------ span targets
@pytest.mark.parametrize("max_gram", [1, 3, 5])
def test_spans_are_short_separated_whole_word_starts(max_gram):
    config = PermutationConfig(seq_len=64, reuse_len=0, perm_size=4, num_predict=9)
    config = PermutationConfig(**{**config.__dict__, "max_gram": max_gram})
    for seed in range(100):
        g = generator(seed)
        candidates = torch.rand(60, generator=g) > 0.1
        is_start = torch.rand(60, generator=g) > 0.3
        goal = int(torch.randint(1, 20, (1,), generator=g))
        spans = sample_spans(candidates, goal, config, generator(seed), is_start)
        assert sum(e - b for b, e in spans) <= goal
        for k, (b, e) in enumerate(spans):
            assert 1 <= e - b <= max_gram and e < 60  # never reaches the last token
            assert is_start[b] and candidates[b:e].all()
            if k:
                assert b > spans[k - 1][1]  # a gap of context between spans
        mask = sample_span_mask(candidates, goal, config, generator(seed), is_start)
        assert int(mask.sum()) == min(goal, int(candidates.sum()))
        assert not (mask & ~candidates).any()
        for b, e in spans:  # the same draws: the spans are kept, fill-up only adds
            assert mask[b:e].all()


def test_span_lengths_favour_short_ngrams():
    config = PermutationConfig(seq_len=512, reuse_len=0, perm_size=4, num_predict=85)
    lengths = torch.zeros(6)
    everything = torch.ones(2000, dtype=torch.bool)
    for seed in range(20):
        for b, e in sample_spans(everything, 10_000, config, generator(seed)):
            lengths[e - b] += 1
    share = lengths[1:] / lengths.sum()
    pmf = (1 / torch.arange(1, 6)) / (1 / torch.arange(1, 6)).sum()  # 0.44 0.22 0.15 0.11 0.09
    assert torch.allclose(share, pmf.float(), atol=0.03), share


# ------------------------------------------------------------------------------ instances
def check_instance(config: PermutationConfig, parts: dict, built: dict) -> bool:
    L, R, P = config.seq_len, config.reuse_len, config.predictions
    ids, real = parts["input_ids"], parts["attention_mask"].bool()
    is_target = built["input_q"].bool()
    is_func = (ids == SEP) | (ids == CLS)
    # exact counts per part (all there is when a padded part is short), never specials/padding
    can = real & ~is_func
    assert int(is_target[:R].sum()) == min(config.goals[0], int(can[:R].sum()))
    assert int(is_target[R:].sum()) == min(config.goals[1], int(can[R:].sum()))
    assert not (is_target & (is_func | ~real)).any()
    # target_mapping: one-hot rows at the targets in position order, then zero rows
    positions = torch.nonzero(is_target).flatten()
    k = len(positions)
    assert torch.equal(built["target_mapping"][:k].argmax(-1), positions)
    assert torch.equal(built["target_mapping"].sum(-1), (torch.arange(P) < k).float())
    assert torch.equal(built["target"][:k], ids[positions])  # the tokens themselves
    assert torch.equal(built["target_mask"], (torch.arange(P) < k).float())
    assert torch.equal(built["labels"][:k], ids[positions])
    assert (built["labels"][k:] == IGNORE_INDEX).all()
    assert torch.equal(built["input_k"], ids)
    # each part: one order, blocks of perm_size in sequence with one shared permutation
    order = built["order"]
    for lo, hi in ((0, R), (R, L)):
        if hi == lo:
            continue
        blocks = order[lo:hi].view(-1, config.perm_size)  # (blocks, perm_size)
        base = torch.arange(0, hi - lo, config.perm_size).unsqueeze(1)
        assert torch.equal(blocks - base, (blocks - base)[:1].expand_as(blocks))
        assert sorted((blocks[0] - base[0]).tolist()) == list(range(config.perm_size))
        want = permutation_mask(is_target[lo:hi], is_func[lo:hi], order[lo:hi])
        assert torch.equal(built["perm_mask"][lo:hi, lo:hi], want)
    # the reuse part never sees the rest; the rest sees all of the reuse part
    assert (built["perm_mask"][:R, R:] == 1).all() and (built["perm_mask"][R:, :R] == 0).all()
    # the query stream of a target never sees its own token
    assert (built["perm_mask"].diagonal()[is_target] == 1).all()
    return k == P  # all num_predict targets found


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        PermutationConfig(seq_len=24, reuse_len=0, perm_size=6, num_predict=4, max_gram=5),
        PermutationConfig(seq_len=40, reuse_len=20, perm_size=20, partial_prediction=7),
    ],
)
def test_instances_over_many_seeds(config):
    complete = [check_instance(config, *random_instance(config, seed)) for seed in range(150)]
    assert sum(complete) > 75  # most rows have room for every target: num_predict exactly


def test_instances_are_deterministic_under_the_generator():
    _, one = random_instance(SMALL, 5)
    _, again = random_instance(SMALL, 5)
    _, other = random_instance(SMALL, 6)
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert not torch.equal(one["perm_mask"], other["perm_mask"])


def test_default_shape_is_the_papers():
    config = PermutationConfig()
    assert (config.seq_len, config.reuse_len, config.predictions) == (512, 256, 85)
    assert config.goals == (43, 42)


def test_short_parts_fall_short_with_zero_rows():
    config = PermutationConfig(seq_len=16, reuse_len=4, perm_size=4, num_predict=6)
    parts = assemble([5], [6], [], config, sep_id=SEP, cls_id=CLS, pad_id=PAD)
    built = permutation_instance(
        parts["input_ids"],
        config,
        generator(0),
        sep_id=SEP,
        cls_id=CLS,
        attention_mask=parts["attention_mask"],
    )
    assert built["target_mask"].tolist() == [1, 1, 0, 0, 0, 0]  # 5 and 6 are all there is
    assert built["target"].tolist() == [5, 6, 0, 0, 0, 0]
    assert built["labels"].tolist() == [5, 6] + [IGNORE_INDEX] * 4
    assert built["target_mapping"][2:].abs().sum() == 0


def test_collate_stacks():
    batch = collate_permutation([random_instance(SMALL, s)[1] for s in range(3)])
    assert batch["perm_mask"].shape == (3, 32, 32)
    assert batch["target_mapping"].shape == (3, 6, 32)


# ------------------------------------------------------------------------------ bad configs
@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"perm_size": 0}, "perm_size must be >= 1"),
        ({"perm_size": 3}, "perm_size (3) must divide reuse_len (8)"),
        ({"reuse_len": 12, "perm_size": 4, "seq_len": 30}, "must divide seq_len - reuse_len (18)"),
        ({"reuse_len": 32}, "reuse_len (32) must be < seq_len - 3 (29)"),
        ({"reuse_len": 40}, "reuse_len (40) must be < seq_len - 3"),
        ({"reuse_len": -4}, "reuse_len must be >= 0"),
        ({"seq_len": -8}, "seq_len must be >= 1"),
        ({"num_predict": 0}, "num_predict must be >= 1"),
        ({"num_predict": 30}, "num_predict (30) is more than"),
        ({"max_gram": 0}, "max_gram must be >= 1"),
        ({"mask_alpha": 0}, "mask_alpha (0) must be >= mask_beta (1)"),
        ({"partial_prediction": 0}, "partial_prediction must be >= 1"),
    ],
)
def test_bad_config_names_the_option(fields, names):
    with pytest.raises(ConfigError) as error:
        PermutationConfig(**{**SMALL.__dict__, **fields})
    assert names in str(error.value) and "\n" not in str(error.value)


def test_reverse_draws_spans_over_the_part_read_backwards():
    config = PermutationConfig(seq_len=32, reuse_len=0, perm_size=4, num_predict=6, max_gram=3)
    for seed in range(30):
        g = generator(500 + seed)
        ids = torch.randint(10, 99, (32,), generator=g)
        ids[[9, 30]], ids[31] = SEP, CLS
        is_start = torch.rand(32, generator=g) < 0.6
        built = permutation_instance(
            ids, config, generator(seed), sep_id=SEP, cls_id=CLS, is_start=is_start, reverse=True
        )
        candidates = (ids != SEP) & (ids != CLS)
        want = sample_span_mask(candidates.flip(0), 6, config, generator(seed), is_start.flip(0))
        assert torch.equal(built["input_q"].bool(), want.flip(0))
