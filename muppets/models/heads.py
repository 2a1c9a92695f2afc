"""Pretraining heads and the encoder + heads composition.

Devlin et al. 2019 (https://arxiv.org/abs/1810.04805) section 3.1: masked LM with a decoder tied to
the input word embeddings (as in transformers' BertLMPredictionHead / RobertaLMHead), and the
next-sentence classifier on the pooled [CLS] vector. ALBERT's sentence-order prediction (Lan et al.
2020, section 4.1) uses the same 2-way head. ELECTRA (Clark et al. 2020) adds replaced-token
detection, and its generator's MLM head narrows to the embedding width E.

The vocabulary projection runs only at masked positions: (M, V) logits, never (B, T, V); the
encoder's last layer itself is finished only at those positions (and [CLS]), see forward_at.

Shapes:
    B  batch size      T  sequence length      H  hidden size      V  vocabulary size
    M  masked positions in the batch (labels != -100)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.models.layers import ACTIVATIONS, initialize


class MaskedLMHead(nn.Module):
    """dense + activation + LayerNorm, then the tied decoder (weight passed in) + own bias.

    embedding_size: the width of the word embeddings when it is not the hidden size (ELECTRA's
    generator: dense H -> E, as google-research/electra's _get_masked_lm_output).
    """

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        activation: str,
        layer_norm_eps: float,
        initializer_range: float,
        embedding_size: int | None = None,
    ):
        super().__init__()
        E = embedding_size or hidden_size
        self.dense = nn.Linear(hidden_size, E)
        self.activation = ACTIVATIONS[activation]
        self.norm = nn.LayerNorm(E, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # (V,) the decoder's own bias
        initialize(self, initializer_range)

    def transform(self, hidden: Tensor) -> Tensor:
        """(M, H) -> (M, E): everything before the decoder (SpanBERT projects it together with
        its SBO head's rows, models/span_boundary.py)."""
        return self.norm(self.activation(self.dense(hidden)))

    def forward(self, hidden: Tensor, decoder_weight: Tensor) -> Tensor:
        """(M, H) hidden states at masked positions, (V, E) word embeddings -> (M, V) logits."""
        return F.linear(self.transform(hidden), decoder_weight, self.bias)


class ReplacedTokenHead(nn.Module):
    """ELECTRA's discriminator head: dense H -> H + activation, then dense H -> 1: one logit per
    token, "was it replaced?" (google-research/electra run_pretraining.py,
    _get_discriminator_output; transformers' ElectraDiscriminatorPredictions)."""

    def __init__(self, hidden_size: int, activation: str, initializer_range: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACTIVATIONS[activation]
        self.prediction = nn.Linear(hidden_size, 1)
        initialize(self, initializer_range)

    def forward(self, hidden: Tensor) -> Tensor:
        """(N, H) -> (N,) logits."""
        return self.prediction(self.activation(self.dense(hidden))).squeeze(-1)


class SentencePairHead(nn.Module):
    """NSP / SOP: a 2-way linear classifier on the pooled first-token vector."""

    def __init__(self, hidden_size: int, initializer_range: float, num_labels: int = 2):
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_labels)
        initialize(self, initializer_range)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled)  # (B, 2)


class PretrainingOutput(NamedTuple):
    mlm_logits: Tensor  # (M, V) at masked positions in row-major (B, T) order; (B, T, V) if all
    pair_logits: Tensor | None  # (B, 2) NSP / SOP logits; None without a pair head


class PretrainingModel(nn.Module):
    """An encoder with its pretraining heads. Beyond the encoder protocol the encoder has
    `embeddings.word_embeddings` (the tied decoder) and may have `forward_at` (the last layer
    computed at chosen positions only).

    State-dict names: `encoder.*`, `mlm_head.*`, `pair_head.*` (see hf.py for the mapping).
    mlm_head is None for an encoder alone (transformers' BertModel files): it can be fine-tuned,
    extracted from and converted, but not called; a command that needs the head says so.
    """

    def __init__(
        self, encoder: nn.Module, mlm_head: MaskedLMHead | None, pair_head: nn.Module | None
    ):
        super().__init__()
        self.encoder = encoder
        self.mlm_head = mlm_head
        self.pair_head = pair_head
        if pair_head is None:
            # The pooler only feeds the pair head. Left trainable it would never get a gradient,
            # which DistributedDataParallel rejects; it is kept (checkpoints carry it) but frozen.
            encoder.pooler.requires_grad_(False)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        masked_positions: Tensor | None = None,
    ) -> PretrainingOutput:
        """masked_positions: (B, T) bool, real tokens to predict; None = every position."""
        if self.mlm_head is None:
            raise ValueError("this model has no MLM head (an encoder alone)")
        decoder_weight = self.encoder.embeddings.word_embeddings.weight  # (V, H), tied
        if masked_positions is None:
            hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H)
            mlm_logits = self.mlm_head(hidden, decoder_weight)  # (B, T, V)
            first = hidden[:, 0]  # (B, H)
        else:
            hidden, is_masked, first = self._rows(
                input_ids, attention_mask, token_type_ids, masked_positions
            )
            mlm_logits = self.mlm_head(hidden[is_masked], decoder_weight)  # (M, V)
        pair_logits = None
        if self.pair_head is not None:
            pair_logits = self.pair_head(self.encoder.pooled(first.unsqueeze(1)))  # (B, 2)
        return PretrainingOutput(mlm_logits, pair_logits)

    def _rows(self, input_ids, attention_mask, token_type_ids, masked_positions):
        """The loss reads the last layer only at masked tokens (and [CLS] for the pair head):
        (R, H) hidden rows in row-major order, (R,) which are masked, (B, H) first tokens."""
        wanted = masked_positions.clone()  # (B, T)
        if self.pair_head is not None:
            wanted[:, 0] = True
        if hasattr(self.encoder, "forward_at"):
            hidden = self.encoder.forward_at(input_ids, attention_mask, token_type_ids, wanted)
        else:  # an encoder without the shortcut: the same rows, the whole last layer computed
            hidden = self.encoder(input_ids, attention_mask, token_type_ids)[wanted]  # (R, H)
        if hidden.shape[0] != int(wanted.sum()):
            raise ValueError("masked positions (and the first token) must be real tokens")
        first_column = torch.zeros_like(wanted)
        first_column[:, 0] = True
        first = hidden[first_column[wanted]] if self.pair_head is not None else None  # (B, H)
        return hidden, masked_positions[wanted], first
