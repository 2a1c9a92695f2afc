"""Model presets and builders, as plain dicts filled right here (no import-time registration).

BERT sizes: Devlin et al. 2019 (base, large) and Turc et al. 2019, "Well-Read Students Learn
Better" (https://arxiv.org/abs/1908.08962: tiny, mini, small, medium). RoBERTa: Liu et al. 2019,
with the values of the released roberta-base / roberta-large config.json files. ELECTRA: Clark et
al. 2020, Table 6 (small, base, large: embedding size, generator size 1/4, 1/3, 1/4); tiny and
mini are bert-tiny / bert-mini discriminators with E = H / 2 as Small's. ALBERT: Lan et al. 2020,
Table 1 (base, large, xlarge, xxlarge; E = 128, all layers shared); tiny and mini are bert-tiny /
bert-mini sizes with E = H / 2. XLNet: Yang et al. 2019 section 3.1 (base: the released
xlnet-base-cased config.json; large: xlnet-large-cased); tiny and mini are bert-tiny / bert-mini
sizes. Transformer-XL: Dai et al. 2019, the WikiText-103 base of run_wt103_base.sh; tiny and
mini are bert-tiny / bert-mini sizes; -norec: the same without recurrence (mem_len 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from muppets.errors import ConfigError
from muppets.models.albert import AlbertConfig, build_albert_encoder
from muppets.models.bert import BertConfig, BertModel
from muppets.models.electra import ElectraConfig, ElectraPretrainingModel, build_discriminator
from muppets.models.heads import MaskedLMHead, PretrainingModel, SentencePairHead
from muppets.models.span_boundary import SpanBertModel, SpanBoundaryHead
from muppets.models.transfo_xl import TransfoXLConfig
from muppets.models.xlnet import XLNetConfig, XLNetLMHeadModel, XLNetModel

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


# ELECTRA: BERT's vocabulary and positions (google-research/electra's configure_pretraining.py).
_ELECTRA = {**_BERT, "model_type": "electra"}
# ALBERT: the released albert-*-v2 config.json files (30k SentencePiece vocabulary, E = 128,
# tanh-GELU, no dropout; xxlarge with 64 heads).
_ALBERT = {
    **_BERT,
    "model_type": "albert",
    "vocab_size": 30000,
    "embedding_size": 128,
    "hidden_act": "gelu_new",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}

# XLNet: a 32k SentencePiece vocabulary, exact GELU (transformers' XLNetConfig defaults).
_XLNET = {"model_type": "xlnet", "vocab_size": 32000, "ff_activation": "gelu"}


def _xlnet_size(layers: int, hidden: int, heads: int) -> dict[str, int]:
    return {"n_layer": layers, "d_model": hidden, "n_head": heads, "d_inner": 4 * hidden}


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
    # generator_hidden_size: the paper's. The released google/electra-small-generator is 1.0
    # (hidden 256, 4 heads, FFN 1024): preset_config("electra-small", generator_hidden_size=1.0).
    "electra-tiny": {**_ELECTRA, **_size(2, 128, 2), "embedding_size": 64},
    "electra-mini": {**_ELECTRA, **_size(4, 256, 4), "embedding_size": 128},
    "electra-small": {**_ELECTRA, **_size(12, 256, 4), "embedding_size": 128},
    "electra-base": {
        **_ELECTRA,
        **_size(12, 768, 12),
        "embedding_size": 768,
        "generator_hidden_size": 1 / 3,
    },
    "electra-large": {**_ELECTRA, **_size(24, 1024, 16), "embedding_size": 1024},
    "albert-tiny": {**_ALBERT, **_size(2, 128, 2), "embedding_size": 64},
    "albert-mini": {**_ALBERT, **_size(4, 256, 4), "embedding_size": 128},
    "albert-base": {**_ALBERT, **_size(12, 768, 12)},
    "albert-large": {**_ALBERT, **_size(24, 1024, 16)},
    "albert-xlarge": {**_ALBERT, **_size(24, 2048, 16)},
    "albert-xxlarge": {**_ALBERT, **_size(12, 4096, 64)},
    "xlnet-tiny": {**_XLNET, **_xlnet_size(2, 128, 2)},
    "xlnet-mini": {**_XLNET, **_xlnet_size(4, 256, 4)},
    "xlnet-base-cased": {**_XLNET, **_xlnet_size(12, 768, 12)},
    "xlnet-large-cased": {**_XLNET, **_xlnet_size(24, 1024, 16)},
}


def _transfo_xl_size(layers: int, hidden: int, heads: int, length: int) -> dict[str, int]:
    # tgt_len = mem_len (the paper's training setting for WikiText-103)
    return {
        "n_layer": layers,
        "d_model": hidden,
        "n_head": heads,
        "d_head": hidden // heads,
        "d_inner": 4 * hidden,
        "tgt_len": length,
        "mem_len": length,
    }


# Causal LMs, not encoders (so not in PRESETS, which finetune and pretrain take). The base's
# vocabulary (267,735 words) is replaced by the tokenizer's when a run builds it.
_WT103_BASE = {**_transfo_xl_size(16, 410, 10, 150), "d_inner": 2100, "dropatt": 0.0}
LM_PRESETS: dict[str, dict[str, Any]] = {
    "transfo-xl-tiny": _transfo_xl_size(2, 128, 2, 64),
    "transfo-xl-mini": _transfo_xl_size(4, 256, 4, 128),
    "transfo-xl-wt103-base": _WT103_BASE,
}
for _name in list(LM_PRESETS):  # the paper's comparison: the same model without recurrence
    LM_PRESETS[f"{_name}-norec"] = {**LM_PRESETS[_name], "mem_len": 0}


def lm_config(name: str, **overrides: Any) -> TransfoXLConfig:
    """The config of a Transformer-XL preset with fields overridden (e.g. vocab_size=8000)."""
    if name not in LM_PRESETS:
        valid = ", ".join(LM_PRESETS)
        raise ConfigError(f"unknown language model preset {name!r}; valid presets: {valid}")
    unknown = sorted(set(overrides) - set(TransfoXLConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown config field {unknown[0]!r} in overrides of preset {name!r}")
    return TransfoXLConfig(**{**LM_PRESETS[name], **overrides})


# model_type -> encoder builder; RoBERTa is BERT with other presets; ELECTRA's encoder is its
# discriminator (BERT's encoder over embeddings of width E).
MODELS: dict[str, Callable[[Any], nn.Module]] = {
    "bert": BertModel,
    "roberta": BertModel,
    "electra": build_discriminator,
    "albert": build_albert_encoder,
    "xlnet": XLNetModel,
}
CONFIGS: dict[str, type] = {
    "bert": BertConfig,
    "roberta": BertConfig,
    "electra": ElectraConfig,
    "albert": AlbertConfig,
    "xlnet": XLNetConfig,
}


def preset_config(name: str, **overrides: Any) -> BertConfig | ElectraConfig | AlbertConfig:
    """The config of a preset, with fields overridden (e.g. vocab_size=8000).

    Overriding hidden_size alone keeps intermediate_size = 4 * hidden_size.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    if "hidden_size" in overrides and "intermediate_size" not in overrides:
        values["intermediate_size"] = 4 * overrides["hidden_size"]
    if "d_model" in overrides and "d_inner" not in overrides:  # XLNet's names
        values["d_inner"] = 4 * overrides["d_model"]
    config_class = CONFIGS[values["model_type"]]
    unknown = sorted(set(overrides) - set(config_class.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown config field {unknown[0]!r} in overrides of preset {name!r}")
    return config_class(**{**values, **overrides})


def build_encoder(config: BertConfig | ElectraConfig) -> nn.Module:
    if config.model_type not in MODELS:
        raise ConfigError(
            f"config field model_type={config.model_type!r}: valid: {', '.join(MODELS)}"
        )
    return MODELS[config.model_type](config)


def build_pretraining_model(
    config: BertConfig | ElectraConfig,
    with_pair_head: bool | None = None,
    with_mlm_head: bool = True,
    with_sbo_head: bool = False,
) -> PretrainingModel | ElectraPretrainingModel | SpanBertModel:
    """Encoder + tied MLM head (+ NSP/SOP head; by default for BERT, not for RoBERTa); for
    ELECTRA, generator + discriminator (no pair head). with_mlm_head=False: the encoder alone
    (what a transformers BertModel / RobertaModel file holds). with_sbo_head: SpanBERT's MLM +
    span boundary heads over a BERT or RoBERTa encoder."""
    if isinstance(config, XLNetConfig):  # its LM head (tied, bias only) or the encoder alone
        if with_pair_head or with_sbo_head:
            raise ConfigError("XLNet has no sentence-pair or span boundary head")
        return XLNetLMHeadModel(config, with_mlm_head=with_mlm_head)
    if isinstance(config, ElectraConfig):
        if with_pair_head:
            raise ConfigError("ELECTRA has no sentence-pair head (NSP/SOP): use objective electra")
        return ElectraPretrainingModel(config)
    if with_sbo_head:
        if config.model_type not in ("bert", "roberta") or with_pair_head or not with_mlm_head:
            raise ConfigError(
                f"model_type {config.model_type!r}: the span boundary objective is SpanBERT's: "
                "a BERT or RoBERTa encoder with its MLM head and no pair head"
            )
        c = config
        head = (c.hidden_size, c.vocab_size, c.hidden_act, c.layer_norm_eps, c.initializer_range)
        return SpanBertModel(build_encoder(config), MaskedLMHead(*head), SpanBoundaryHead(*head))
    if with_pair_head is None:
        with_pair_head = config.model_type in ("bert", "albert")
    c = config
    mlm = None
    if with_mlm_head:  # ALBERT's narrows to E before the tied decoder
        mlm = MaskedLMHead(
            c.hidden_size,
            c.vocab_size,
            c.hidden_act,
            c.layer_norm_eps,
            c.initializer_range,
            embedding_size=getattr(c, "embedding_size", None),
        )
    pair = SentencePairHead(c.hidden_size, c.initializer_range) if with_pair_head else None
    return PretrainingModel(build_encoder(config), mlm, pair)
