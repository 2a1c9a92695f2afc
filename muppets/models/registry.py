"""Model presets and builders, as plain dicts filled right here (no import-time registration).

BERT sizes: Devlin et al. 2019 (base, large) and Turc et al. 2019, "Well-Read Students Learn
Better" (https://arxiv.org/abs/1908.08962: tiny, mini, small, medium). RoBERTa: Liu et al. 2019,
with the values of the released roberta-base / roberta-large config.json files.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from muppets.errors import ConfigError
from muppets.models.bert import BertConfig, BertModel
from muppets.models.heads import MaskedLMHead, PretrainingModel, SentencePairHead

# Shared by every BERT preset (google-research/bert's released bert_config.json files).
_BERT = {
    "model_type": "bert",
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
# RoBERTa: byte-level BPE vocabulary, no segments, 2 position rows spent on the pad offset.
_ROBERTA = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
}


def _size(layers: int, hidden: int, heads: int) -> dict[str, int]:
    # Every preset uses the paper's feed-forward width, intermediate = 4 * hidden.
    return {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": {**_BERT, **_size(2, 128, 2)},
    "bert-mini": {**_BERT, **_size(4, 256, 4)},
    "bert-small": {**_BERT, **_size(4, 512, 8)},
    "bert-medium": {**_BERT, **_size(8, 512, 8)},
    "bert-base": {**_BERT, **_size(12, 768, 12)},
    "bert-large": {**_BERT, **_size(24, 1024, 16)},
    "roberta-mini": {**_ROBERTA, **_size(4, 256, 4)},
    "roberta-base": {**_ROBERTA, **_size(12, 768, 12)},
    "roberta-large": {**_ROBERTA, **_size(24, 1024, 16)},
}

# model_type -> encoder class; RoBERTa is BERT with other presets.
MODELS: dict[str, type[nn.Module]] = {"bert": BertModel, "roberta": BertModel}


def preset_config(name: str, **overrides: Any) -> BertConfig:
    """The config of a preset, with fields overridden (e.g. vocab_size=8000).

    Overriding hidden_size alone keeps intermediate_size = 4 * hidden_size.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    if "hidden_size" in overrides and "intermediate_size" not in overrides:
        values["intermediate_size"] = 4 * overrides["hidden_size"]
    unknown = sorted(set(overrides) - set(BertConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown config field {unknown[0]!r} in overrides of preset {name!r}")
    return BertConfig(**{**values, **overrides})


def build_encoder(config: BertConfig) -> nn.Module:
    if config.model_type not in MODELS:
        raise ConfigError(
            f"config field model_type={config.model_type!r}: valid: {', '.join(MODELS)}"
        )
    return MODELS[config.model_type](config)


def build_pretraining_model(
    config: BertConfig, with_pair_head: bool | None = None
) -> PretrainingModel:
    """Encoder + tied MLM head (+ NSP/SOP head; by default for BERT, not for RoBERTa)."""
    if with_pair_head is None:
        with_pair_head = config.model_type == "bert"
    c = config
    mlm = MaskedLMHead(
        c.hidden_size, c.vocab_size, c.hidden_act, c.layer_norm_eps, c.initializer_range
    )
    pair = SentencePairHead(c.hidden_size, c.initializer_range) if with_pair_head else None
    return PretrainingModel(build_encoder(config), mlm, pair)
