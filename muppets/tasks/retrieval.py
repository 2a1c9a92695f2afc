"""Parallel-sentence retrieval: how often a sentence's nearest neighbour in the other language
is its translation (Tatoeba, Artetxe & Schwenk 2019; XTREME, Hu et al. 2020 section 3.4).

Sentences are the mean of one hidden layer over their real tokens (no training, no fine-tuning:
the measurement of how aligned a multilingual encoder's spaces are); neighbours by cosine
similarity. Line i of one side translates line i of the other. Ties go to the lowest index.

Shapes:
    N  sentences per side      H  hidden size      L  layers (+ 1: the embedding output)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """(B, T, H) states and (B, T) mask -> (B, H): the mean over the real tokens."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def retrieval_accuracy(queries: Tensor, candidates: Tensor) -> float:
    """(N, H) queries, (N, H) candidates: the share of queries whose most cosine-similar
    candidate is the one at the same index."""
    similarity = F.normalize(queries.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T
    found = similarity.argmax(-1)  # (N,) the first maximum on a tie
    return int(found.eq(torch.arange(len(queries), device=found.device)).sum()) / len(queries)


def both_directions(source: Tensor, english: Tensor) -> dict[str, float]:
    """Accuracy of xx -> en (find each xx sentence's English) and en -> xx."""
    return {
        "xx_to_en": retrieval_accuracy(source, english),
        "en_to_xx": retrieval_accuracy(english, source),
    }
