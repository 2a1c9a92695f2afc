"""The feature-based downstream models (features.py) as the training loop needs them: a builder,
an objective and a forward over a batch.

Peters et al. 2018 section 3.3: the biLM is frozen and its layers enter the task model through a
trainable ScalarMix. The biLM runs outside the task model (training/finetune_features.py runs it
once per batch, or once per sentence and caches its layers), and `PrecomputedLayers` hands those
layers to FrozenFeatures, so the mix, its boundary removal and its state-dict names
(`features.mix.*`) are FrozenFeatures' own, and no biLM weight is in the task model at all.

Batch keys: inputs and attention_mask (B, T) of the first text; inputs_b and attention_mask_b of
the second (pairs only); labels (B,) label ids or float scores, or (B, T) tag ids (tagging), -100
wherever nothing is predicted. inputs are word ids (B, T) or ELMo layers (B, J, T, D).
With --elmo-word-embeddings, inputs (B, J + 1, T, D) are the layers and, in channel 0 of an extra
layer, each word's id at its own position between <S> and </S> (ElmoWordFeatures).

Shapes:
    B  batch size    J  layers (L + 1)    T  tokens    D  feature dim    K  labels
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.tasks.features import (
    BagOfEmbeddingsClassifier,
    BiLSTMClassifier,
    BiLSTMTagger,
    TokenSoftmaxTagger,
)
from muppets.tasks.objectives import IGNORE

DOWNSTREAM = ("bilstm", "bag-of-embeddings")


class PrecomputedLayers(nn.Module):
    """The encoder protocol's forward_all_layers over layers computed beforehand: inputs
    (B, J, T, D) -> J x (B, T, D). No parameters."""

    def __init__(self, num_layers: int, hidden_size: int):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size  # J = num_layers + 1

    def forward_all_layers(
        self,
        inputs: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> list[Tensor]:
        return list(inputs.unbind(1))


class ElmoWordFeatures(nn.Module):
    """[x_k; ELMo_k] (Peters et al. 2018 section 3.3): a trainable word embedding beside the ELMo
    mix, (B, T - 2, E + D). inputs (B, J + 1, T, D): J layers, then the word ids at [:, J, :, 0]
    (float32 holds ids below 2**24 exactly), aligned with the layers' <S> words </S>."""

    def __init__(self, elmo: nn.Module, words: nn.Module):
        super().__init__()
        self.elmo = elmo  # FrozenFeatures over PrecomputedLayers, boundaries removed
        self.words = words  # EmbeddingFeatures
        self.output_dim = words.output_dim + elmo.output_dim

    def forward(self, inputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        ids = inputs[:, -1, 1:-1, 0].long()  # (B, T - 2), the words between <S> and </S>
        elmo, mask = self.elmo(inputs[:, :-1], mask)  # (B, T - 2, D), (B, T - 2)
        words, _ = self.words(ids, mask)  # (B, T - 2, E), zero at padding
        return torch.cat([words, elmo], dim=-1), mask


def build_downstream(
    kind: str,
    head: str,
    features: nn.Module,
    num_labels: int,
    hidden_size: int,
    dropout: float,
    pairs: bool = False,
) -> nn.Module:
    """The `kind` model of DOWNSTREAM for a head: a classifier (one output for regression) or,
    tagging, a tagger (bag-of-embeddings: a softmax over each word's own features)."""
    if kind not in DOWNSTREAM:
        raise ConfigError(f"unknown downstream {kind!r}; valid: {', '.join(DOWNSTREAM)}")
    if head == "tagging":
        if kind == "bilstm":
            return BiLSTMTagger(features, hidden_size, num_labels, dropout)
        return TokenSoftmaxTagger(features, num_labels, dropout)
    if head not in ("classification", "regression"):
        raise ConfigError(f"--downstream has no model for {head!r} tasks")
    outputs = 1 if head == "regression" else num_labels
    if kind == "bilstm":
        return BiLSTMClassifier(features, hidden_size, outputs, pairs, dropout)
    return BagOfEmbeddingsClassifier(features, outputs, pairs, dropout)


def forward_batch(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """(B, K) or, tagging, (B, T, K) logits. The model is called (DDP's hooks run)."""
    if "inputs_b" in batch:
        return model(
            batch["inputs"], batch["attention_mask"], batch["inputs_b"], batch["attention_mask_b"]
        )
    return model(batch["inputs"], batch["attention_mask"])


@dataclass(frozen=True)
class DownstreamObjective:
    """The loop's contract (loop.py) for a downstream model: component `head` (classification,
    regression or tagging), the cross-entropy (squared error) summed over the labelled targets."""

    head: str

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits, labels = forward_batch(model, batch).float(), batch["labels"]  # loss in fp32
        if self.head == "regression":
            return logits.squeeze(-1), labels.float()  # (B,), (B,)
        kept = labels.ne(IGNORE)  # (B,) or (B, T)
        return logits[kept], labels[kept]  # (M, K), (M,)

    def _loss_sum(self, outputs: Tensor, labels: Tensor) -> Tensor:
        if self.head == "regression":
            return F.mse_loss(outputs, labels, reduction="sum")
        return F.cross_entropy(outputs, labels, reduction="sum")

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {self.head: self._loss_sum(*self._forward(model, batch))}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        labels = batch["labels"]
        n = labels.numel() if self.head == "regression" else int(labels.ne(IGNORE).sum())
        return {self.head: n}

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        outputs, labels = self._forward(model, batch)
        result = {
            f"{self.head}_loss_sum": float(self._loss_sum(outputs, labels)),
            f"{self.head}_count": float(labels.numel()),
        }
        if self.head != "regression":
            result[f"{self.head}_correct"] = float(outputs.argmax(-1).eq(labels).sum())
        return result
