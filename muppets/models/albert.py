"""ALBERT: BERT's encoder with a factorised embedding and layers shared across depth.

Lan et al. 2020, "ALBERT: A Lite BERT for Self-supervised Learning of Language Representations"
(https://arxiv.org/abs/1909.11942); the reference is google-research/albert (modeling.py) and
transformers' modeling_albert.py. What differs from bert.BertModel, and nothing else:
  - factorised embedding parametrisation (section 3.1): word, position and segment embeddings of
    width E, projected up to H by one Linear (`embedding_hidden_mapping_in`, our
    `embeddings_project`, as ELECTRA's);
  - cross-layer parameter sharing (section 3.1): num_hidden_groups groups of inner_group_num
    layers; application i of num_hidden_layers runs group i * G // L (modeling_albert.py,
    AlbertTransformer: int(i / (L / G))), each group running its inner layers in order;
  - the MLM head narrows to E before the tied decoder (heads.MaskedLMHead with embedding_size),
    and the sentence-order head (section 4.1) is heads.SentencePairHead on the pooled [CLS].
So the model is heads.PretrainingModel over a BertModel; the MLM + SOP objective is
tasks/objectives.py's "mlm+sop". Dropout defaults to 0 as in the released ALBERT configs.

Shapes:
    N  real tokens in the batch      H  hidden size      E  embedding size      R  rows asked for
    L  layer applications (num_hidden_layers)      G  groups      K  layers per group
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.bert import BertConfig, BertModel
from muppets.models.layers import Packing, TransformerLayer


@dataclass
class AlbertConfig:
    """transformers' AlbertConfig fields; defaults are albert-base-v2's."""

    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout_prob: float = 0.1
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    model_type: str = "albert"
    pre_layer_norm: bool = False

    def __post_init__(self) -> None:
        if self.model_type != "albert":
            raise ConfigError(f"config field model_type={self.model_type!r}: must be 'albert'")
        for name in ("embedding_size", "num_hidden_groups", "inner_group_num"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config field {name}={value!r}: must be a positive integer")
        self.encoder_config()  # BERT's checks name the field (hidden_size, heads, ...)
        E, H = self.embedding_size, self.hidden_size
        if E > H:
            # Section 3.1: the factorisation is E << H, the point being V x E + E x H parameters
            # instead of V x H; a wider embedding than the encoder only adds parameters.
            raise ConfigError(
                f"config field embedding_size={E}: must be <= hidden_size={H} "
                "(ALBERT factorises the embeddings: E -> H projects up)"
            )
        G, L = self.num_hidden_groups, self.num_hidden_layers
        if L % G:
            # transformers' int(i / (L / G)) would give the groups unequal shares of the depth.
            raise ConfigError(
                f"config field num_hidden_groups={G}: must divide num_hidden_layers={L} "
                "(each group is applied to L / G consecutive layers)"
            )

    def encoder_config(self) -> BertConfig:
        """BERT's config of the same encoder (its checks, its field names)."""
        shared = {f.name for f in dataclasses.fields(BertConfig)} - {"model_type"}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in shared}
        return BertConfig(**values, model_type="bert")

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlbertConfig:
        """A config.json dict (ours or transformers'); unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})


class LayerGroup(nn.Module):
    """K layers run in order (transformers' AlbertLayerGroup)."""

    def __init__(self, layers: list[TransformerLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, packing: Packing, rows: Tensor | None = None) -> Tensor:
        """(N, H) -> (N, H); with rows, only the last inner layer narrows to (R, H)."""
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            x = layer(x, packing, rows if k == last else None)
        return x


class SharedLayers(nn.Module):
    """The G x K distinct layers, iterated as the L x K layer applications BertModel runs.

    State-dict names: `groups.{g}.layers.{k}.*`; each tensor is stored once however often it is
    applied, and autograd sums the gradients of its applications (section 3.1, "share all
    parameters across layers").
    """

    def __init__(self, groups: list[LayerGroup], num_hidden_layers: int):
        super().__init__()
        self.groups = nn.ModuleList(groups)
        per_group = num_hidden_layers // len(groups)
        # A plain list: the same modules again, not registered twice.
        self._schedule = [
            layer for i in range(num_hidden_layers) for layer in groups[i // per_group].layers
        ]

    def __len__(self) -> int:
        return len(self._schedule)

    def __iter__(self):
        return iter(self._schedule)


def build_albert_encoder(config: AlbertConfig) -> BertModel:
    """BERT's encoder over E-wide embeddings and the shared layers (the encoder protocol)."""
    c = config
    groups = [
        LayerGroup(
            [
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
                for _ in range(c.inner_group_num)
            ]
        )
        for _ in range(c.num_hidden_groups)
    ]
    layers = SharedLayers(groups, c.num_hidden_layers)
    return BertModel(c.encoder_config(), embedding_size=c.embedding_size, layers=layers)
