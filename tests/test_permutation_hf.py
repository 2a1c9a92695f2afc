"""permutation.py against transformers' DataCollatorForPermutationLanguageModeling.

Where they agree (no <sep>/<cls>/padding in the row): given the collator's targets and its
factorisation order, permutation_mask reproduces its perm_mask exactly, and its order is our
factorization_order with perm_size = L / 2 (two blocks, one shared permutation).

Where they differ on purpose (transformers#6812 and #22435; we follow zihangdai/xlnet
data_utils.py `_local_perm`):
  - the collator hides only targets (`& masked_indices`); the reference also hides <sep>/<cls>
    from ordinary tokens and from the targets placed before them (`masked_or_func_tokens`);
  - the collator replaces targets by <mask> in input_ids; the reference keeps the tokens
    (the content stream must see its own token), as input_k does here;
  - the collator predicts at every position (target_mapping = eye(L)); the reference keeps
    num_predict rows; its span law (uniform length, context span / plm_probability) is not
    `_sample_mask`'s (p(n) ~ 1/n, whole-word starts), and it has no reuse part.
"""

import pytest
import torch

from muppets.data.permutation import permutation_mask

transformers = pytest.importorskip("transformers")

MASK, SEP, CLS, PAD = 1, 2, 3, 0


class StubTokenizer:
    """What the collator reads from a tokenizer (no vocabulary files needed)."""

    mask_token, mask_token_id = "<mask>", MASK
    pad_token, pad_token_id = "<pad>", PAD
    _pad_token = pad_token

    def get_special_tokens_mask(self, ids, already_has_special_tokens=True):
        return [int(i in (SEP, CLS, PAD, MASK)) for i in ids]


def hf_batch(rows: torch.Tensor, seed: int):
    collator = transformers.DataCollatorForPermutationLanguageModeling(
        tokenizer=StubTokenizer(), plm_probability=1 / 6, max_span_length=5
    )
    torch.manual_seed(seed)  # the collator draws from the global generator
    return collator.torch_mask_tokens(rows.clone())


def recovered_order(perm_mask: torch.Tensor, masked: torch.Tensor, func: torch.Tensor):
    """Places in the collator's order, read off its mask: a target's place is the number of
    targets it sees (doubled, so that a <sep>/<cls> fits between two targets)."""
    seen = ((perm_mask == 0) & masked.unsqueeze(0)).sum(-1)  # (L,) targets each row sees
    order = torch.zeros_like(seen)
    order[masked] = 2 * seen[masked] + 2
    order[func] = 2 * seen[func] + 1  # after the targets it sees, before the others
    return order


def test_same_mask_as_the_collator_without_special_tokens():
    L = 24
    rows = torch.randint(10, 50, (32, L), generator=torch.Generator().manual_seed(0))
    inputs, perm_mask, target_mapping, labels = hf_batch(rows, seed=1)
    masked = labels != -100
    assert masked.sum() > 32  # spans were drawn in most rows
    none = torch.zeros(L, dtype=torch.bool)
    for b in range(len(rows)):
        order = recovered_order(perm_mask[b], masked[b], none)
        assert torch.equal(permutation_mask(masked[b], none, order), perm_mask[b])
        # the collator's order is two blocks of L / 2, block 0 first, one shared permutation
        ranked = order.clone()
        first, second = masked[b, : L // 2], masked[b, L // 2 :]
        if first.any() and second.any():
            assert ranked[: L // 2][first].max() < ranked[L // 2 :][second].min()
        both = torch.nonzero(first & second).flatten()
        low, high = ranked[: L // 2][both], ranked[L // 2 :][both]
        assert torch.equal(low.argsort(), high.argsort())
    # the departures that are not in perm_mask
    assert (inputs[masked] == MASK).all()  # theirs; our input_k keeps the tokens
    assert torch.equal(target_mapping[0], torch.eye(L))  # theirs; ours has num_predict rows


def test_special_tokens_are_where_the_masks_differ():
    L = 16
    g = torch.Generator().manual_seed(2)
    rows = torch.randint(10, 50, (32, L), generator=g)
    rows[:, 7] = SEP
    rows[:, 14] = SEP
    rows[:, 15] = CLS
    inputs, perm_mask, _, labels = hf_batch(rows, seed=3)
    masked = labels != -100
    func = (rows == SEP) | (rows == CLS)
    differ = 0
    for b in range(len(rows)):
        order = recovered_order(perm_mask[b], masked[b], func[b])
        ours = permutation_mask(masked[b], func[b], order)
        # every column but <sep>/<cls>: the same
        assert torch.equal(ours[:, ~func[b]], perm_mask[b][:, ~func[b]])
        # theirs: everyone sees <sep>/<cls>; ours: ordinary tokens never do (no leak of the order)
        assert (perm_mask[b][:, func[b]] == 0).all()
        ordinary = ~masked[b] & ~func[b]
        assert (ours[ordinary][:, func[b]] == 1).all()
        differ += int((ours != perm_mask[b]).sum())
    assert differ > 0
