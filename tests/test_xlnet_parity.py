"""XLNet against transformers' XLNetLMHeadModel at a tiny random size (eval mode): LM logits and
new memories equal within 1e-5 with and without mems, with perm_mask and target_mapping (the two
streams), segments, left padding, causal attention, clamp_len and bi_data."""

import pytest
import torch

from muppets.models.hf_xlnet import config_from_hf, state_dict_from_hf
from muppets.models.xlnet import XLNetLMHeadModel

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
V, B, T = 50, 2, 7


def pair(**extra):
    """A random transformers XLNetLMHeadModel and ours with its weights, both in eval mode."""
    torch.manual_seed(0)
    config = transformers.XLNetConfig(
        vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=48, initializer_range=0.3, **extra
    )
    theirs = transformers.XLNetLMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorms and biases off their initial 1 / 0, so a swap shows
        for name, p in theirs.named_parameters():
            if "layer_norm" in name or name.endswith(("bias", "layer_1.bias", "layer_2.bias")):
                p.add_(torch.randn_like(p) * 0.3)
    ours_config = config_from_hf(config.to_dict())
    ours = XLNetLMHeadModel(ours_config)
    ours.load_state_dict(state_dict_from_hf(theirs.state_dict(), ours_config))
    return theirs, ours.eval()


def permutation_inputs(generator, B=B):
    """XLNet-style perm_mask (i may not see j when j comes at or after i in a random order, so
    the first in the order sees nothing of the segment) and a target_mapping of 3 one-hot rows
    and a zero (padding) row."""
    order = torch.stack([torch.randperm(T, generator=generator) for _ in range(B)])  # rank
    perm_mask = (order[:, None, :] >= order[:, :, None]).float()  # (B, T, T)
    targets = torch.stack([torch.randperm(T, generator=generator)[:3] for _ in range(B)])
    mapping = torch.zeros(B, 4, T)
    mapping.scatter_(2, targets[..., None], 1.0)
    mapping[:, 3] = 0.0
    return perm_mask, mapping


def to_hf_mems(mems):
    return [m.transpose(0, 1) for m in mems]


def compare(theirs, ours, mems=None, **inputs):
    with torch.no_grad():
        out = theirs(**inputs, mems=to_hf_mems(mems) if mems else None, use_mems=True)
        mine = ours(**inputs, mems=mems, use_mems=True)
    torch.testing.assert_close(mine.logits, out.logits, atol=ATOL, rtol=0)
    assert len(mine.mems) == len(out.mems)
    for a, b in zip(mine.mems, to_hf_mems(out.mems), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    return mine


CONFIGS = {
    "bi": {},
    "bi-mem5-reuse4": {"mem_len": 5, "reuse_len": 4},
    "uni-same-length": {"attn_type": "uni", "same_length": True, "mem_len": 6},
    "uni-clamp": {"attn_type": "uni", "clamp_len": 3, "mem_len": 6},
    "bi-data-clamp": {"bi_data": True, "clamp_len": 4, "mem_len": 6},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_mems_match_transformers(name):
    theirs, ours = pair(**CONFIGS[name])
    g = torch.Generator().manual_seed(1)
    first = torch.randint(0, V, (B, T), generator=g)
    second = torch.randint(0, V, (B, T), generator=g)
    mems = compare(theirs, ours, input_ids=first).mems
    mems = compare(theirs, ours, mems, input_ids=second).mems  # the memory carried over
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 2]] * B)
    compare(theirs, ours, mems, input_ids=first, token_type_ids=segments)


@pytest.mark.parametrize("name", CONFIGS)
def test_two_streams_match_transformers(name):
    theirs, ours = pair(**CONFIGS[name])
    # transformers' causal mask cannot take a perm_mask of a batch (its in-place += does not
    # broadcast): one row there.
    b = 1 if name.startswith("uni") else B
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (b, T), generator=g)
    perm_mask, mapping = permutation_inputs(g, b)
    segments = torch.tensor([[0, 0, 1, 1, 1, 1, 2]] * b)
    mine = compare(theirs, ours, input_ids=ids, perm_mask=perm_mask, target_mapping=mapping)
    assert mine.logits.shape == (b, 4, V)
    compare(
        theirs,
        ours,
        mine.mems,
        input_ids=ids.flip(1),
        perm_mask=perm_mask,
        target_mapping=mapping,
        token_type_ids=segments,
    )


def test_left_padding_matches_transformers_and_the_unpadded_sequence():
    """Relative positions make left padding free: the real tokens' logits are those of the
    unpadded sequence, with and without memory."""
    theirs, ours = pair()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, :3] = 0  # row 1: three pads on the left
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 2]] * B)
    mine = compare(theirs, ours, input_ids=ids, attention_mask=mask, token_type_ids=segments)
    with torch.no_grad():
        alone = ours(ids[1:, 3:], token_type_ids=segments[1:, 3:]).logits
    torch.testing.assert_close(mine.logits[1, 3:], alone[0], atol=ATOL, rtol=0)


def test_target_mapping_must_be_one_hot_or_zero():
    _, ours = pair()
    ids = torch.zeros(1, T, dtype=torch.long)
    mapping = torch.zeros(1, 2, T)
    mapping[0, 0, :2] = 1.0  # two positions in one row: transformers sums their queries
    with pytest.raises(ValueError, match="one-hot or all zero"):
        ours(ids, target_mapping=mapping)
