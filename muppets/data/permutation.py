"""XLNet's permutation language modelling instances: span targets, block permutations, masks.

Yang et al. 2019 (https://arxiv.org/abs/1906.08237) §2.3 (two-stream attention, partial prediction
with K), §2.4 (segment recurrence: the first `reuse_len` tokens become the next segment's memory)
and appendix A.2; the reference behaviour is zihangdai/xlnet data_utils.py, whose functions are
cited below. An instance of L = seq_len tokens is

    [ reuse part: reuse_len tokens | A <sep> B <sep> <cls> ]      (<cls> at the END)

and short inputs are padded on the LEFT of each part (XLNet's classifier_utils pads on the left),
so that the last token is always <cls> and the reuse part always ends at position reuse_len - 1.

What each part gets (data_utils.py, create_tfrecords + get_dataset's parser):
  1. span targets (`_sample_mask`): n ~ p(n) proportional to 1/n over 1..max_gram, a context of
     n * mask_alpha // mask_beta tokens around it with the span at a uniform offset, starting at a
     word start; the reuse part aims at num_predict - num_predict // 2 targets, the rest at
     num_predict // 2 (all of them when reuse_len is 0); the goal is met by uniform single tokens;
  2. a factorisation order (`_local_perm`): positions cut into blocks of `perm_size`; one random
     permutation of the offsets 0..perm_size-1 is shared by every block, and block b comes
     before block b + 1 (each part draws its own);
  3. the attention rules (`_local_perm`, perm_mask[i, j] = 1: i cannot attend to j):
     - a token that is neither a target nor <sep>/<cls> is seen by everyone and sees only such
       tokens (itself included);
     - a target sees those tokens and the targets and <sep>/<cls> before it in the order, never
       itself (the query stream predicts it);
     - <sep>/<cls> see the same plus themselves; they are never targets;
  4. the reuse part never sees the other part; the other part sees the whole reuse part
     (get_dataset: perm_mask_0 padded with ones, perm_mask_1 with zeros).

Departures from the reference, each deliberate:
  - `_sample_mask` checks `seg[beg]` where it means `seg[end]` when counting words, so its spans
    are n TOKENS long from a word start; kept (spans hold at most max_gram tokens). Its spans may
    cover <sep>/<cls> and its fill-up may pick them, so the reference predicts fewer than
    num_predict tokens ("extra padding due to CLS/SEP"); here a span stops before a special or
    padding token and fill-up draws from the other tokens only, so num_predict is exact whenever
    the part has enough ordinary tokens (rows past the targets stay zero, target_mask 0).
  - reuse_len may be 0 (one part, no memory); the reference asserts perm_size <= reuse_len.
  - randomness comes from a torch.Generator argument, not numpy's and TensorFlow's global ones.
bi_data's backward rows are read in xlnet_instances.py; `reverse` here draws their spans in text
order, as `_sample_mask(reverse=True)`. Tokens never change: input_k holds the real ids (the
content stream sees its own token) and input_q flags the targets, whose query stream starts from
the mask embedding inside the model.

Shapes: L = seq_len, P = num_predict, B = batch.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from muppets.errors import ConfigError

IGNORE_INDEX = -100
# Segment ids, as zihangdai/xlnet classifier_utils.py (SEG_ID_A, SEG_ID_B, SEG_ID_CLS, SEG_ID_PAD):
# the reuse part and A share segment 0, B and its <sep> 1, <cls> 2, padding 4.
SEG_A, SEG_B, SEG_CLS, SEG_PAD = 0, 1, 2, 4


@dataclass(frozen=True)
class PermutationConfig:
    """Field names follow zihangdai/xlnet's flags (train_gpu.py / data_utils.py)."""

    seq_len: int = 512
    reuse_len: int = 256  # tokens whose hidden states become the next segment's memory
    perm_size: int = 256  # block length of the factorisation order (reference: = reuse_len)
    num_predict: int | None = None  # targets per instance; None = seq_len // partial_prediction
    partial_prediction: int = 6  # K of §2.3: about one token in K is predicted (85 of 512)
    max_gram: int = 5
    mask_alpha: int = 6  # a span of n tokens sits in a context of n * alpha // beta tokens
    mask_beta: int = 1

    def __post_init__(self) -> None:
        for name in ("seq_len", "perm_size", "partial_prediction", "max_gram", "mask_beta"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reuse_len < 0:
            raise ConfigError(f"reuse_len must be >= 0, got {self.reuse_len}")
        if self.reuse_len >= self.seq_len - 3:
            raise ConfigError(
                f"reuse_len ({self.reuse_len}) must be < seq_len - 3 ({self.seq_len - 3}): "
                "the rest holds A <sep> B <sep> <cls>"
            )
        for name, length in (("reuse_len", self.reuse_len), ("seq_len - reuse_len", self.rest)):
            if length % self.perm_size:
                raise ConfigError(
                    f"perm_size ({self.perm_size}) must divide {name} ({length}): the "
                    "factorisation order permutes whole blocks of perm_size tokens"
                )
        if self.mask_alpha < self.mask_beta:
            raise ConfigError(
                f"mask_alpha ({self.mask_alpha}) must be >= mask_beta ({self.mask_beta})"
            )
        if self.num_predict is not None and self.num_predict < 1:
            raise ConfigError(f"num_predict must be >= 1, got {self.num_predict}")
        if self.predictions < 1:
            raise ConfigError(
                f"seq_len // partial_prediction is 0 ({self.seq_len} // {self.partial_prediction})"
            )
        reuse_goal, rest_goal = self.goals
        if reuse_goal > self.reuse_len or rest_goal > self.rest - 3:
            raise ConfigError(
                f"num_predict ({self.predictions}) is more than the tokens that can be "
                f"predicted: {reuse_goal} of reuse_len {self.reuse_len} and {rest_goal} of the "
                f"{self.rest - 3} tokens of A and B"
            )

    @property
    def rest(self) -> int:
        """Length of the part after the reuse part: A <sep> B <sep> <cls>."""
        return self.seq_len - self.reuse_len

    @property
    def predictions(self) -> int:
        return self.num_predict or self.seq_len // self.partial_prediction

    @property
    def goals(self) -> tuple[int, int]:
        """Targets aimed at in (reuse part, rest): create_tfrecords' num_predict_0, _1."""
        if self.reuse_len == 0:
            return 0, self.predictions
        return self.predictions - self.predictions // 2, self.predictions // 2


# --------------------------------------------------------------------------------- assembling
def assemble(
    reuse: Sequence[int],
    a: Sequence[int],
    b: Sequence[int],
    config: PermutationConfig,
    *,
    sep_id: int,
    cls_id: int,
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """[pad* reuse | pad* A <sep> B <sep> <cls>] of exactly seq_len tokens (create_tfrecords'
    cat_data and seg_id), padded on the left of each part. Returns int64 (L,) `input_ids`,
    `seg_id` and `attention_mask` (1 on tokens, 0 on padding)."""
    R, rest = config.reuse_len, config.rest
    if len(reuse) > R or len(a) + len(b) > rest - 3:
        raise ValueError(
            f"{len(reuse)} reuse tokens and {len(a)} + {len(b)} tokens of A and B do not fit "
            f"reuse_len {R} and {rest - 3}"
        )
    tail = [*a, sep_id, *b, sep_id, cls_id]
    tail_seg = [SEG_A] * (len(a) + 1) + [SEG_B] * (len(b) + 1) + [SEG_CLS]
    pad_r, pad_t = R - len(reuse), rest - len(tail)
    ids = [pad_id] * pad_r + list(reuse) + [pad_id] * pad_t + tail
    seg = [SEG_PAD] * pad_r + [SEG_A] * len(reuse) + [SEG_PAD] * pad_t + tail_seg
    real = [0] * pad_r + [1] * len(reuse) + [0] * pad_t + [1] * len(tail)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "seg_id": torch.tensor(seg, dtype=torch.long),
        "attention_mask": torch.tensor(real, dtype=torch.long),
    }


# ------------------------------------------------------------------------------ span targets
def sample_spans(
    candidates: torch.Tensor,
    goal: int,
    config: PermutationConfig,
    generator: torch.Generator,
    is_start: torch.Tensor | None = None,
) -> list[tuple[int, int]]:
    """[begin, end) spans of one part, in order (`_sample_mask`'s loop, with the departures of
    the module docstring). candidates: (n,) bool, tokens that may be predicted (not <sep>,
    <cls>, padding); is_start: (n,) bool, tokens that start a word (None: all of them)."""
    n_tok = len(candidates)
    can = candidates.tolist()
    start_list = (candidates if is_start is None else candidates & is_start).tolist()
    # p(n) proportional to 1/n, n = 1..max_gram (as ALBERT's n-grams), drawn by inverse cdf
    weights = [1.0 / n for n in range(1, config.max_gram + 1)]
    cdf = list(itertools.accumulate(w / sum(weights) for w in weights))
    # every loop but the last adds >= 1 target: goal + 1 draws of each kind, made at once
    draws = torch.rand(2, max(goal, 0) + 1, generator=generator, dtype=torch.float64).tolist()
    spans: list[tuple[int, int]] = []
    count, cur = 0, 0
    for u_gram, u_left in zip(*draws, strict=True):
        if cur >= n_tok or count >= goal:
            break
        n = min(bisect.bisect_right(cdf, u_gram) + 1, config.max_gram, goal - count)
        context = n * config.mask_alpha // config.mask_beta  # >= n, as mask_alpha >= mask_beta
        left = int(u_left * context)  # uniform in 0 .. context - 1
        beg = cur + left
        while beg < n_tok and not start_list[beg]:  # the start of a whole word
            beg += 1
        if beg + n >= n_tok:  # the reference stops when the span would reach the part's end
            break
        end = beg + 1
        while end < beg + n and can[end]:  # a span stops before a special or padding token
            end += 1
        spans.append((beg, end))
        count += end - beg
        cur = end + context - left  # the context's right side: spans never touch
    return spans


def sample_span_mask(
    candidates: torch.Tensor,
    goal: int,
    config: PermutationConfig,
    generator: torch.Generator,
    is_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n,) bool targets of one part: sample_spans, then single tokens drawn uniformly among
    the other candidates until `goal` (the reference's fill-up loop draws the same law)."""
    mask = torch.zeros(len(candidates), dtype=torch.bool)
    if goal <= 0:
        return mask
    for beg, end in sample_spans(candidates, goal, config, generator, is_start):
        mask[beg:end] = True
    missing = goal - int(mask.sum())
    if missing > 0:
        free = torch.nonzero(candidates & ~mask).flatten()
        mask[free[torch.randperm(len(free), generator=generator)[:missing]]] = True
    return mask


# ---------------------------------------------------------------------- factorisation order
def factorization_order(length: int, perm_size: int, generator: torch.Generator) -> torch.Tensor:
    """(length,) int64: each position's place in the factorisation order (`_local_perm`'s
    `index`): position b * perm_size + j gets b * perm_size + sigma(j), one sigma for all blocks."""
    if perm_size < 1 or length % perm_size:
        raise ConfigError(f"perm_size ({perm_size}) must divide the length ({length})")
    sigma = torch.randperm(perm_size, generator=generator)  # (perm_size,)
    blocks = torch.arange(0, length, perm_size).unsqueeze(1)  # (length / perm_size, 1)
    return (blocks + sigma).flatten()  # (length,)


def permutation_mask(
    is_target: torch.Tensor, is_func: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """(..., n, n) float32 perm_mask of `_local_perm` (1: row i cannot attend to column j).

    is_target (..., n) bool: chosen for prediction (never a <sep>/<cls>); is_func (..., n) bool:
    <sep>/<cls>; order (..., n): place in the factorisation order. Batched over leading dims.
    """
    is_target = is_target & ~is_func  # target_tokens: masked and not functional
    hidden = is_target | is_func  # masked_or_func_tokens: columns that the order hides
    rev = torch.where(hidden, order, torch.full_like(order, -1))  # visible tokens come first
    # a target does not see itself; every other row sees itself (rev + 1)
    self_rev = torch.where(is_target, rev, rev + 1)
    cannot = (self_rev.unsqueeze(-1) <= rev.unsqueeze(-2)) & hidden.unsqueeze(-2)  # (..., n, n)
    return cannot.float()


# ----------------------------------------------------------------------------- instances
def permutation_instance(
    input_ids: torch.Tensor,
    config: PermutationConfig,
    generator: torch.Generator,
    *,
    sep_id: int,
    cls_id: int,
    attention_mask: torch.Tensor | None = None,
    is_start: torch.Tensor | None = None,
    reverse: bool = False,
) -> dict[str, torch.Tensor]:
    """Targets, order and masks of one (L,) instance (get_dataset's parser). reverse: the ids
    are reversed text (bi_data's backward rows): spans are drawn over each part read backwards,
    i.e. in text order (`_sample_mask(reverse=True)`). Returns:

    input_k         (L,)    int64 ids, unchanged (content stream)
    input_q         (L,)    float32 1 at targets (query stream positions)
    perm_mask       (L, L)  float32 1 = cannot attend
    target_mapping  (P, L)  float32 one-hot rows of the targets in position order, zero rows after
    target          (P,)    int64 ids to predict, 0 after the targets
    target_mask     (P,)    float32 1 for real targets
    labels          (P,)    int64 target, -100 where target_mask is 0 (transformers' convention)
    is_func / order (L,)    <sep>/<cls> flags and the factorisation order, for checks
    """
    L, R = config.seq_len, config.reuse_len
    if input_ids.shape != (L,):
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected ({L},)")
    real = torch.ones(L, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_func = (input_ids == sep_id) | (input_ids == cls_id)
    candidates = real & ~is_func
    parts = [(0, R, config.goals[0]), (R, L, config.goals[1])]
    is_target = torch.zeros(L, dtype=torch.bool)
    order = torch.zeros(L, dtype=torch.long)
    perm_mask = torch.ones(L, L)  # the reuse part's rows stay 1 over the rest's columns
    for lo, hi, goal in parts:
        if hi == lo:
            continue
        can, starts = candidates[lo:hi], None if is_start is None else is_start[lo:hi]
        if reverse:
            can, starts = can.flip(0), None if starts is None else starts.flip(0)
        part = sample_span_mask(can, goal, config, generator, starts)
        part = part.flip(0) if reverse else part
        is_target[lo:hi] = part
        order[lo:hi] = factorization_order(hi - lo, config.perm_size, generator)
        perm_mask[lo:hi, lo:hi] = permutation_mask(part, is_func[lo:hi], order[lo:hi])
    perm_mask[R:, :R] = 0.0  # the rest sees the whole reuse part
    P = config.predictions
    positions = torch.nonzero(is_target).flatten()[:P]  # (k,) in position order
    k = len(positions)
    target_mapping = torch.zeros(P, L)
    target_mapping[torch.arange(k), positions] = 1.0
    target = torch.zeros(P, dtype=torch.long)
    target[:k] = input_ids[positions]  # PLM predicts the token itself ("new_targets")
    target_mask = (torch.arange(P) < k).float()
    return {
        "input_k": input_ids.clone(),
        "input_q": is_target.float(),
        "perm_mask": perm_mask,
        "target_mapping": target_mapping,
        "target": target,
        "target_mask": target_mask,
        "labels": torch.where(target_mask.bool(), target, IGNORE_INDEX),
        "is_func": is_func,
        "order": order,
    }


def collate_permutation(instances: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack instances of one config into (B, ...) tensors."""
    return {key: torch.stack([x[key] for x in instances]) for key in instances[0]}
