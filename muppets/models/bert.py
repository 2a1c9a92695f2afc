"""BERT and RoBERTa encoders.

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (https://arxiv.org/abs/1810.04805); Liu et al. 2019, "RoBERTa: A Robustly Optimized
BERT Pretraining Approach" (https://arxiv.org/abs/1907.11692). RoBERTa is the same network with
other presets and one detail: position ids count real tokens from pad_token_id + 1.

Shapes:
    B  batch size       T  padded sequence length       N  real (non-padding) tokens in batch
    H  hidden size      L  number of layers             V  vocabulary size
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.layers import (
    ACTIVATIONS,
    Packing,
    Pooler,
    TransformerLayer,
    initialize,
    make_packing,
    pad,
    unpad,
)

MODEL_TYPES = ("bert", "roberta")

# Defaults of transformers' RobertaConfig where they differ from BertConfig's (our defaults), for
# config.json files that leave a key out.
_ROBERTA_DEFAULTS = {"vocab_size": 50265, "pad_token_id": 1}


@dataclass
class BertConfig:
    """Field names and defaults as transformers' BertConfig (bert-base)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    model_type: str = "bert"
    pre_layer_norm: bool = False  # False: post-LN as in the paper; True: pre-LN + final LayerNorm

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config field {name}={value!r}: must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"config field hidden_size={self.hidden_size}: must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ConfigError(f"config field {name}={value!r}: must be in [0, 1)")
        for name in ("initializer_range", "layer_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"config field {name}={value!r}: must be a positive number")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"config field hidden_act={self.hidden_act!r}: must be one of "
                + ", ".join(sorted(ACTIVATIONS))
            )
        if self.position_embedding_type != "absolute":
            raise ConfigError(
                f"config field position_embedding_type={self.position_embedding_type!r}: "
                "only 'absolute' is supported"
            )
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"config field model_type={self.model_type!r}: must be one of "
                + ", ".join(MODEL_TYPES)
            )
        pad_id = self.pad_token_id
        if not isinstance(pad_id, int) or isinstance(pad_id, bool):
            raise ConfigError(f"config field pad_token_id={pad_id!r}: must be an integer")
        if not 0 <= pad_id < self.vocab_size:
            raise ConfigError(
                f"config field pad_token_id={pad_id}: must be in [0, vocab_size={self.vocab_size})"
            )
        if self.model_type == "roberta" and self.max_position_embeddings <= pad_id + 1:
            raise ConfigError(
                f"config field max_position_embeddings={self.max_position_embeddings}: RoBERTa "
                f"positions start at pad_token_id + 1 = {pad_id + 1}"
            )

    @property
    def max_sequence_length(self) -> int:
        """Longest input: RoBERTa spends pad_token_id + 1 position rows on its offset."""
        offset = self.pad_token_id + 1 if self.model_type == "roberta" else 0
        return self.max_position_embeddings - offset

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included, under config.json names."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        """Read a config.json dict (ours or Hugging Face's); unknown keys are ignored."""
        model_type = d.get("model_type")
        if model_type is None:
            # Old transformers configs name only the class, e.g. "RobertaForMaskedLM".
            arch = (d.get("architectures") or ["Bert"])[0]
            model_type = "roberta" if arch.lower().startswith("roberta") else "bert"
        known = {f.name for f in dataclasses.fields(cls)}
        values = dict(_ROBERTA_DEFAULTS) if model_type == "roberta" else {}
        values.update({k: v for k, v in d.items() if k in known})
        values["model_type"] = model_type
        return cls(**values)


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, LayerNorm, dropout (section 3.2, Figure 2)."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_positions: int,
        type_vocab_size: int,
        pad_token_id: int,
        layer_norm_eps: float,
        dropout: float,
        roberta_positions: bool,
    ):
        super().__init__()
        self.pad_token_id = pad_token_id
        self.roberta_positions = roberta_positions
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        # transformers gives RoBERTa's position table a padding row as well (modeling_roberta.py).
        position_pad = pad_token_id if roberta_positions else None
        self.position_embeddings = nn.Embedding(
            max_positions, hidden_size, padding_idx=position_pad
        )
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def position_ids(self, input_ids: Tensor) -> Tensor:
        """(B, T) position of every token; padding_idx + 1 onwards for RoBERTa."""
        if not self.roberta_positions:
            return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        # fairseq's make_positions / transformers' create_position_ids_from_input_ids: real tokens
        # count from pad + 1, pad tokens keep position pad_token_id.
        real = input_ids.ne(self.pad_token_id).long()
        return real.cumsum(dim=1) * real + self.pad_token_id

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, packing: Packing) -> Tensor:
        positions = unpad(self.position_ids(input_ids), packing)  # (N,)
        x = (
            self.word_embeddings(unpad(input_ids, packing))
            + self.token_type_embeddings(unpad(token_type_ids, packing))
            + self.position_embeddings(positions)
        )  # (N, H)
        return self.dropout(self.norm(x))


class BertModel(nn.Module):
    """The encoder: (B, T) ids -> (B, T, H) last hidden states (zeros at padding positions)."""

    def __init__(
        self,
        config: BertConfig,
        embedding_size: int | None = None,
        layers: nn.Module | None = None,
    ):
        """embedding_size: embeddings of width E, projected to H by `embeddings_project`
        (ALBERT's factorisation, which has the projection even when E = H). layers: the layer
        applications to run instead of num_hidden_layers own layers (albert.SharedLayers)."""
        super().__init__()
        c = config
        self.hidden_size = c.hidden_size
        E = embedding_size or c.hidden_size
        self.embeddings = BertEmbeddings(
            c.vocab_size,
            E,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.pad_token_id,
            c.layer_norm_eps,
            c.hidden_dropout_prob,
            roberta_positions=c.model_type == "roberta",
        )
        # ELECTRA (electra.py) and ALBERT build the embeddings at a width E < H, projected up.
        self.embeddings_project: nn.Linear | None = None
        if embedding_size is not None:
            self.embeddings_project = nn.Linear(E, c.hidden_size)
        if layers is None:
            layers = nn.ModuleList(
                TransformerLayer(
                    c.hidden_size,
                    c.num_attention_heads,
                    c.intermediate_size,
                    c.hidden_act,
                    c.hidden_dropout_prob,
                    c.attention_probs_dropout_prob,
                    c.layer_norm_eps,
                    c.pre_layer_norm,
                )
                for _ in range(c.num_hidden_layers)
            )
        self.layers = layers
        self.num_layers = len(self.layers)  # layer applications: hidden states = this + 1
        # Pre-LN leaves the residual stream unnormalised; one LayerNorm closes it (Xiong et al.).
        self.final_norm = None
        if c.pre_layer_norm:
            self.final_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.pooler = Pooler(c.hidden_size)
        initialize(self, c.initializer_range)

    def _states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        positions: Tensor | None = None,
    ) -> tuple[list[Tensor], Packing]:
        """Packed states [embeddings (N, H), layer 1, ..., layer L]; with positions, the last
        layer is computed only at those (real) positions: (R, H) in row-major order."""
        B, T = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        packing = make_packing(attention_mask, B, T)
        rows = None if positions is None else unpad(positions, packing).nonzero().squeeze(1)
        x = self.embeddings(input_ids, token_type_ids, packing)  # (N, H), or (N, E): ELECTRA
        if rows is not None and rows.shape[0] == x.shape[0]:
            rows = None  # every real token (ELECTRA's discriminator): no (N, H) gather
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # (N, H)
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, packing, rows if i == self.num_layers - 1 else None)  # (N or R, H)
            states.append(x)
        if self.final_norm is not None:
            states[-1] = self.final_norm(states[-1])
        return states, packing

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """(B, T) ids, (B, T) mask with 1 for real tokens, (B, T) segments -> (B, T, H)."""
        states, packing = self._states(input_ids, attention_mask, token_type_ids)
        return pad(states[-1], packing)

    def forward_at(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        positions: Tensor,
    ) -> Tensor:
        """forward(...)[positions & real tokens] -> (R, H), row-major, without computing the
        last layer's output projection and feed-forward anywhere else (their result would be
        thrown away: pretraining reads only masked tokens and [CLS])."""
        states, _ = self._states(input_ids, attention_mask, token_type_ids, positions.bool())
        return states[-1]

    def forward_all_layers(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> list[Tensor]:
        """L + 1 tensors (B, T, H): the embedding output, then every layer's output (the last
        one equals forward(); for pre-LN it is taken after the final LayerNorm)."""
        states, packing = self._states(input_ids, attention_mask, token_type_ids)
        return [pad(s, packing) for s in states]

    def pooled(self, hidden: Tensor) -> Tensor:
        """(B, T, H) -> (B, H): the pooler on the first ([CLS] / <s>) token."""
        return self.pooler(hidden)
