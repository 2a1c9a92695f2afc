"""ERNIE 1.0 knowledge masking: whole units (phrases, named entities) are masked, never a part.

Sun et al. 2019 (https://arxiv.org/abs/1904.09223) section 3.2: basic-level masking (words here,
characters in Chinese), then phrase-level masking ("mask and predict all the basic units in the
same phrase"), then entity-level masking, as stages of one pretraining (our [[phases]] with
`masking = "whole_word" | "phrase" | "entity"`).

How units reach the masker. Shards store, beside the token ids, one uint8 per token
(shards.UNIT_BITS): bit k set means "this token continues the unit of kind k of the token before
it". `UnitView` packs the bits of one kind above the id (`id | bit << 32`) in the documents it
hands to the instance builders; they only slice and concatenate, so the bits travel with their
tokens into every instance, and `mask_units` unpacks them. A masking unit is then a word (by the
tokenizer's continuation pieces) joined with every word a phrase or entity links it to; a special
token always starts a unit of its own, so truncation or [SEP] never glue two units together.

Selection, our rule: units in random order, a unit that would push the count past
num_to_predict is skipped (smaller ones after it may fit), as google's whole-word masking; then
80/10/10 per token as BERT. ERNIE's own code (PaddlePaddle/ERNIE batching.py, `mask`) instead
selects each unit with probability 0.15 and has no budget; ours keeps BERT's exact 15% budget so
that phases and variants predict the same number of tokens.

Shapes: T tokens in the row, U units among them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from muppets.data.masking import MaskingConfig, _as_ids, _candidates, _replace, num_to_predict
from muppets.data.shards import UNIT_BITS
from muppets.errors import InputError

UNIT_KINDS = UNIT_BITS  # masking mode -> its bit in the shards' units array
_SHIFT = 32  # ids fit in 32 bits (shards store uint16 or uint32)
_ID_MASK = (1 << _SHIFT) - 1


def pack(tokens: np.ndarray, links: np.ndarray, bit: int) -> np.ndarray:
    """(T,) int64 ids with the `bit` of `links` (uint8 per token) moved above bit 32."""
    linked = (np.asarray(links) & bit) != 0
    return np.asarray(tokens, dtype=np.int64) | (linked.astype(np.int64) << _SHIFT)


def unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids (T,) int64, links (T,) bool): what `pack` joined."""
    packed = np.asarray(packed, dtype=np.int64)
    return packed & _ID_MASK, (packed >> _SHIFT) != 0


def unit_spans(
    tokens: np.ndarray, links: np.ndarray, config: MaskingConfig, continuation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends), each (U,): unit u covers tokens[starts[u]:ends[u]].

    A token joins the unit before it when it is a continuation piece or linked (same phrase or
    entity), unless either it or the token before is special: specials are never in a unit.
    """
    candidate = _candidates(tokens, config)
    joins = continuation[tokens] | links
    follows_candidate = np.concatenate(([False], candidate[:-1]))
    is_start = candidate & ~(joins & follows_candidate)
    starts = np.flatnonzero(is_start)
    boundaries = np.flatnonzero(np.append(is_start[1:] | ~candidate[1:], True)) + 1
    ends = boundaries[np.searchsorted(boundaries, starts, side="right")]
    return starts, ends


def mask_units(
    tokens: np.ndarray, rng: np.random.Generator, config: MaskingConfig, continuation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Knowledge masking of one row of packed ids (see the module doc): whole units up to
    num_to_predict tokens, 80/10/10 per token. Returns plain ids and labels, as every masker.

    Unpacked ids (no link bits) give whole-word masking, drawn exactly as here.
    """
    tokens, links = unpack(_as_ids(tokens))
    starts, ends = unit_spans(tokens, links, config, continuation)
    budget = num_to_predict(len(tokens), config)
    chosen = np.zeros(len(tokens), dtype=bool)
    used = 0
    for u in rng.permutation(len(starts)):
        if used >= budget:
            break
        size = int(ends[u] - starts[u])
        if used + size > budget:  # never a part of a unit
            continue
        chosen[starts[u] : ends[u]] = True
        used += size
    return _replace(tokens, chosen, rng.random(len(tokens)), rng, config)


class UnitView(Sequence):
    """A sharded corpus whose sentences carry the links of one unit kind in their ids (`pack`).

    Pickles as its corpus and kind, as ShardedCorpus does, so data-loader workers reopen maps.
    """

    def __init__(self, corpus, kind: str):
        self.corpus, self.kind, self.bit = corpus, kind, UNIT_KINDS[kind]
        self.directory = getattr(corpus, "directory", None)

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        sentences = self.corpus[index]
        links = self.corpus.units(index)
        return [pack(s, u, self.bit) for s, u in zip(sentences, links, strict=True)]


def unit_view(corpus, masking: str):
    """`corpus` itself unless `masking` is a unit kind; then its UnitView (the shards must hold
    that kind of unit: `muppets prepare --phrases`, `--entities-model` or `--units-file`)."""
    if masking not in UNIT_KINDS:
        return corpus
    kinds = getattr(corpus, "unit_kinds", {})
    if masking not in kinds:
        have = ", ".join(kinds) or "none"
        raise InputError(
            f"masking '{masking}' needs {masking} units in the shards (they have: {have}); "
            "run `muppets prepare` with --phrases, --entities-model or --units-file",
            getattr(corpus, "directory", None),
        )
    return UnitView(corpus, masking)
