"""SpanBERT's span boundary objective (SBO) head, and the encoder + MLM + SBO composition.

Joshi et al. 2020, "SpanBERT: Improving Pre-training by Representing and Predicting Spans"
(https://arxiv.org/abs/1907.10529) section 3.2: each token x_i of a masked span (x_s, ..., x_e) is
also predicted from the encoder outputs of the span's two boundary tokens, x_{s-1} and x_{e+1},
and a relative position embedding p_{i-s+1}:
    h0 = [x_{s-1}; x_{e+1}; p_{i-s+1}]
    h1 = LayerNorm(GeLU(W1 h0)),  y_i = LayerNorm(GeLU(W2 h1)),  logits = y_i E^T + b
with the decoder tied to the word embeddings (facebookresearch/SpanBERT pretraining/fairseq/
models/pair_bert.py, BertPairTargetPredictionHead: max_targets 20 positions of width 200,
MLPWithLayerNorm). The head is for pretraining only: SpanBERT checkpoints are BERT's shape.

A span here is a maximal run of masked positions (two adjacent sampled spans form one run: its
outer boundaries are the unmasked tokens around it). Only the last layer's rows at masked and
boundary positions are computed (encoder.forward_at), and the vocabulary projection runs at
masked positions only, once for both heads' rows (MLM's M, then SBO's M: one (2M, H) x (H, V)).

Shapes:
    B  batch size      T  sequence length      H  hidden size      V  vocabulary size
    M  masked positions (in row-major order)   R  rows computed (masked + boundaries)
    P  position embedding width
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.models.heads import MaskedLMHead
from muppets.models.layers import ACTIVATIONS, initialize

MAX_TARGETS = 20  # pair_bert.py: relative positions 0..19 (longer runs share the last one)
POSITION_SIZE = 200  # pair_bert.py: position_embedding_size


class SpanBoundaryHead(nn.Module):
    """[left; right; position] -> 2 x (dense, GeLU, LayerNorm) -> tied decoder + own bias."""

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        activation: str,
        layer_norm_eps: float,
        initializer_range: float,
        max_targets: int = MAX_TARGETS,
        position_size: int = POSITION_SIZE,
    ):
        super().__init__()
        self.max_targets = max_targets
        self.position_embeddings = nn.Embedding(max_targets, position_size)
        self.dense1 = nn.Linear(2 * hidden_size + position_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dense2 = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.activation = ACTIVATIONS[activation]
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # (V,)
        initialize(self, initializer_range)

    def transform(self, left: Tensor, right: Tensor, offset: Tensor) -> Tensor:
        """(M, H) x_{s-1}, (M, H) x_{e+1}, (M,) i - s -> (M, H): everything before the decoder."""
        position = self.position_embeddings(offset.clamp(max=self.max_targets - 1))  # (M, P)
        h = torch.cat([left, right, position], dim=-1)  # (M, 2H + P)
        h = self.norm1(self.activation(self.dense1(h)))
        return self.norm2(self.activation(self.dense2(h)))  # (M, H)

    def forward(
        self, left: Tensor, right: Tensor, offset: Tensor, decoder_weight: Tensor
    ) -> Tensor:
        """(M, H) x_{s-1}, (M, H) x_{e+1}, (M,) i - s, (V, H) word embeddings -> (M, V)."""
        return F.linear(self.transform(left, right, offset), decoder_weight, self.bias)


def span_boundaries(masked: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, T) bool -> for each masked position, in row-major order, (M,) each: the flat index
    (b * T + t) of the last unmasked token before its run (s - 1), of the first one after it
    (e + 1), and its offset in the run (i - s)."""
    B, T = masked.shape
    t = torch.arange(T, device=masked.device).expand(B, T)  # (B, T)
    left = torch.where(masked, -1, t).cummax(dim=1).values  # last unmasked position <= t
    right = torch.where(masked, T, t).flip(1).cummin(dim=1).values.flip(1)  # first >= t
    if bool((left[masked] < 0).any()) or bool((right[masked] >= T).any()):
        raise ValueError("a masked span without a token on each side (the first or last token)")
    base = torch.arange(B, device=masked.device)[:, None] * T  # (B, 1)
    return (left + base)[masked], (right + base)[masked], (t - left - 1)[masked]


class SpanBertOutput(NamedTuple):
    """Both heads' logits in one tensor (one vocabulary projection): MLM rows, then SBO rows."""

    logits: Tensor  # (2M, V): [MLM at the masked positions, row-major; SBO at the same ones]

    @property
    def mlm_logits(self) -> Tensor:
        return self.logits[: len(self.logits) // 2]  # (M, V)

    @property
    def sbo_logits(self) -> Tensor:
        return self.logits[len(self.logits) // 2 :]  # (M, V) the same positions, from boundaries


class SpanBertModel(nn.Module):
    """An encoder with the MLM and SBO heads. State-dict names: `encoder.*`, `mlm_head.*` (as
    heads.PretrainingModel, so the BERT conversion tables apply) and `sbo_head.*`."""

    def __init__(self, encoder: nn.Module, mlm_head: MaskedLMHead, sbo_head: SpanBoundaryHead):
        super().__init__()
        self.encoder = encoder
        self.mlm_head = mlm_head
        self.sbo_head = sbo_head
        self.pair_head = None  # no NSP: single segments (section 3.3)
        encoder.pooler.requires_grad_(False)  # kept for fine-tuning, never read here

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        masked_positions: Tensor,
    ) -> SpanBertOutput:
        """masked_positions: (B, T) bool, real tokens to predict, each run with a real token on
        either side."""
        B, T = masked_positions.shape
        left, right, offset = span_boundaries(masked_positions)  # (M,) each
        wanted = masked_positions.flatten().clone()  # (B * T,)
        wanted[left] = True
        wanted[right] = True
        if attention_mask is not None and bool((wanted & ~attention_mask.bool().flatten()).any()):
            raise ValueError("masked positions and their span boundaries must be real tokens")
        wanted = wanted.view(B, T)
        hidden = self.encoder.forward_at(input_ids, attention_mask, token_type_ids, wanted)
        row = wanted.flatten().cumsum(0) - 1  # (B * T,) row of each wanted position in hidden
        M = len(offset)
        # One gather for the three row sets (its backward accumulates once), one projection of
        # both heads' rows onto the tied vocabulary (one (V, H) weight gradient, not two).
        picked = hidden[torch.cat([row[masked_positions.flatten()], row[left], row[right]])]
        at, x_left, x_right = picked.view(3, M, hidden.shape[-1]).unbind(0)  # (M, H) each
        words = self.encoder.embeddings.word_embeddings.weight  # (V, H), tied
        mlm, sbo = self.mlm_head, self.sbo_head
        x = torch.cat([mlm.transform(at), sbo.transform(x_left, x_right, offset)])  # (2M, H)
        logits = F.linear(x, words)  # (2M, V); each head's own decoder bias added in place
        logits.view(2, M, len(words)).add_(torch.stack([mlm.bias, sbo.bias])[:, None])
        return SpanBertOutput(logits)
