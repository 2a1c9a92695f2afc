"""Collate instances into padded batch tensors, named as Hugging Face's BERT forward expects."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from muppets.data.instances import Instance
from muppets.data.masking import IGNORE_INDEX


def _all_or_none(instances: Sequence[Instance], field: str) -> bool:
    present = [getattr(instance, field) is not None for instance in instances]
    if any(present) and not all(present):
        raise ValueError(f"some instances have {field} and some do not; cannot collate them")
    return all(present)


def collate(
    instances: Sequence[Instance], pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad to the longest instance (rounded up to `pad_to_multiple_of`, e.g. 8 for tensor
    cores). Returns int64 tensors:

        input_ids            (B, T)  pad_id after the tokens
        attention_mask       (B, T)  1 on tokens, 0 on padding
        token_type_ids       (B, T)  segment ids, 0 on padding
        labels               (B, T)  masked-LM targets, -100 on padding (when instances have them)
        next_sentence_label  (B,)    NSP / SOP label (when instances have one)
    """
    if not instances:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(instance.tokens) for instance in instances]
    T = max(lengths)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(instances)
    has_labels = _all_or_none(instances, "lm_labels")
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((B, T), dtype=np.int64)
    labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
    for row, (instance, n) in enumerate(zip(instances, lengths, strict=True)):
        input_ids[row, :n] = instance.tokens
        token_type_ids[row, :n] = instance.segment_ids
        if has_labels:
            labels[row, :n] = instance.lm_labels
    attention_mask = (np.arange(T) < np.array(lengths)[:, None]).astype(np.int64)  # (B, T)
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
    }
    if has_labels:
        batch["labels"] = torch.from_numpy(labels)
    if _all_or_none(instances, "label"):
        batch["next_sentence_label"] = torch.tensor([i.label for i in instances], dtype=torch.int64)
    return batch
