"""Hugging Face transformers <-> muppets conversion for ALBERT, as key tables (hf.py's style).

Our ALBERT is heads.PretrainingModel over a BertModel with shared layers (albert.py), so our
names are BERT's but for the E -> H projection (`encoder.embeddings_project`, transformers'
`albert.encoder.embedding_hidden_mapping_in`) and the layers, stored once per group and inner
layer (`encoder.layers.groups.{g}.layers.{k}`, transformers'
`albert.encoder.albert_layer_groups.{g}.albert_layers.{k}`). Shapes: AlbertForPreTraining (MLM
head + `sop_classifier`), AlbertForMaskedLM (no pooler) and AlbertModel (the encoder alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from muppets.errors import ConfigError, InputError
from muppets.models.albert import AlbertConfig
from muppets.models.heads import PretrainingModel
from muppets.models.hf import (
    HfCheckpoint,
    _check_keys,
    _read_json,
    _read_weights,
    load_converted,
)
from muppets.models.registry import build_pretraining_model

_GROUP = "encoder.layers.groups.{g}.layers.{k}"
_THEIR_GROUP = "albert.encoder.albert_layer_groups.{g}.albert_layers.{k}"
_EMBEDDINGS = [
    ("encoder.embeddings.word_embeddings.weight", "albert.embeddings.word_embeddings.weight"),
    (
        "encoder.embeddings.position_embeddings.weight",
        "albert.embeddings.position_embeddings.weight",
    ),
    (
        "encoder.embeddings.token_type_embeddings.weight",
        "albert.embeddings.token_type_embeddings.weight",
    ),
    ("encoder.embeddings.norm.{wb}", "albert.embeddings.LayerNorm.{wb}"),
    ("encoder.embeddings_project.{wb}", "albert.encoder.embedding_hidden_mapping_in.{wb}"),
]
_LAYER = [
    (
        _GROUP + ".attention.qkv.{wb}",
        _THEIR_GROUP + ".attention.query.{wb}",
        _THEIR_GROUP + ".attention.key.{wb}",
        _THEIR_GROUP + ".attention.value.{wb}",
    ),
    (_GROUP + ".attention.out.{wb}", _THEIR_GROUP + ".attention.dense.{wb}"),
    (_GROUP + ".attention_norm.{wb}", _THEIR_GROUP + ".attention.LayerNorm.{wb}"),
    (_GROUP + ".feed_forward.up.{wb}", _THEIR_GROUP + ".ffn.{wb}"),
    (_GROUP + ".feed_forward.down.{wb}", _THEIR_GROUP + ".ffn_output.{wb}"),
    (_GROUP + ".feed_forward_norm.{wb}", _THEIR_GROUP + ".full_layer_layer_norm.{wb}"),
]
_POOLER = [("encoder.pooler.dense.{wb}", "albert.pooler.{wb}")]
# The decoder weight is the word embeddings and its bias predictions.bias: neither is stored.
_MLM_HEAD = [
    ("mlm_head.dense.{wb}", "predictions.dense.{wb}"),
    ("mlm_head.norm.{wb}", "predictions.LayerNorm.{wb}"),
    ("mlm_head.bias", "predictions.bias"),
]
_PAIR_HEAD = [("pair_head.linear.{wb}", "sop_classifier.classifier.{wb}")]
_TIED = "predictions.decoder"
ARCHITECTURES = {
    (True, True): "AlbertForPreTraining",
    (True, False): "AlbertForMaskedLM",
    (False, False): "AlbertModel",
}


def key_table(
    config: AlbertConfig, with_pair_head: bool, with_mlm_head: bool = True, with_pooler=True
) -> list[tuple[str, tuple[str, ...]]]:
    """Rows (our key, (HF keys...)) for a model with this config."""
    if config.pre_layer_norm:
        raise ConfigError("config field pre_layer_norm=True: transformers' ALBERT is post-LN")
    rows = [(r, 0, 0) for r in _EMBEDDINGS]
    rows += [
        (r, g, k)
        for g in range(config.num_hidden_groups)
        for k in range(config.inner_group_num)
        for r in _LAYER
    ]
    heads = (_POOLER if with_pooler else []) + (_MLM_HEAD if with_mlm_head else [])
    rows += [(r, 0, 0) for r in heads + (_PAIR_HEAD if with_pair_head else [])]
    table = []
    for row, g, k in rows:
        for wb in ("weight", "bias") if "{wb}" in row[0] else ("",):
            ours, *theirs = (name.format(g=g, k=k, wb=wb) for name in row)
            table.append((ours, tuple(theirs)))
    return table


def state_dict_to_hf(state_dict: dict[str, Tensor], config: AlbertConfig) -> dict[str, Tensor]:
    """PretrainingModel state dict -> transformers' (AlbertModel's unprefixed)."""
    with_mlm_head = "mlm_head.bias" in state_dict
    with_pair_head = "pair_head.linear.weight" in state_dict
    if with_pair_head and not with_mlm_head:
        raise ConfigError("an ALBERT with a SOP head and no MLM head has no transformers class")
    table = key_table(config, with_pair_head, with_mlm_head)
    _check_keys(set(state_dict), {ours for ours, _ in table}, None, "muppets state dict")
    if with_mlm_head and not with_pair_head:  # AlbertForMaskedLM has no pooler
        table = [row for row in table if not row[0].startswith("encoder.pooler.")]
    out = {}
    for ours, theirs in table:
        if len(theirs) == 1:
            out[theirs[0]] = state_dict[ours]
        else:  # fused QKV -> query, key, value; cloned so each owns its memory
            parts = state_dict[ours].chunk(len(theirs))
            out.update({name: part.clone() for name, part in zip(theirs, parts, strict=True)})
    if not with_mlm_head:  # AlbertModel.save_pretrained writes no "albert." prefix
        out = {k.removeprefix("albert."): v for k, v in out.items()}
    return out


def _normalise(sd: dict[str, Tensor], path: object) -> dict[str, Tensor]:
    """Headless AlbertModel files, stored buffers and the tied decoder copies."""
    if not any(k.startswith("albert.") for k in sd):
        sd = {f"albert.{k}": v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith((".position_ids", ".token_type_ids"))}
    decoder = sd.pop(f"{_TIED}.weight", None)
    words = sd.get("albert.embeddings.word_embeddings.weight")
    if decoder is not None and words is not None and not torch.equal(decoder, words):
        raise InputError(
            f"{_TIED}.weight differs from the word embeddings: untied decoders are not supported",
            path,
        )
    decoder_bias = sd.pop(f"{_TIED}.bias", None)
    if decoder_bias is not None:
        sd.setdefault("predictions.bias", decoder_bias)
    return sd


def state_dict_from_hf(
    state_dict: dict[str, Tensor], config: AlbertConfig, path: object = None
) -> dict[str, Tensor]:
    """transformers' state dict -> ours; a file without a pooler (AlbertForMaskedLM) leaves
    `encoder.pooler.*` out, one without an MLM head (AlbertModel) `mlm_head.*`."""
    sd = _normalise(state_dict, path)
    table = key_table(
        config,
        with_pair_head="sop_classifier.classifier.weight" in sd,
        with_mlm_head="predictions.dense.weight" in sd,
        with_pooler="albert.pooler.weight" in sd,
    )
    _check_keys(set(sd), {name for _, theirs in table for name in theirs}, path, "checkpoint keys")
    return {
        ours: torch.cat([sd[n] for n in theirs]) if len(theirs) > 1 else sd[theirs[0]]
        for ours, theirs in table
    }


def config_to_hf(
    config: AlbertConfig, with_pair_head: bool = True, with_mlm_head: bool = True
) -> dict[str, Any]:
    if config.pre_layer_norm:
        raise ConfigError("config field pre_layer_norm=True: transformers' ALBERT is post-LN")
    d = {k: v for k, v in config.to_dict().items() if k != "pre_layer_norm"}
    arch = ARCHITECTURES[(with_mlm_head, with_pair_head and with_mlm_head)]
    return {"architectures": [arch], **d, "tie_word_embeddings": True}


def config_from_hf(d: dict[str, Any], path: object = None) -> AlbertConfig:
    """A transformers config.json dict -> ours; a bad field names the file."""
    if d.get("tie_word_embeddings") is False:
        raise ConfigError("config field tie_word_embeddings=False: ALBERT's decoder is tied", path)
    try:
        return AlbertConfig.from_dict({**d, "model_type": "albert"})
    except ConfigError as error:
        raise ConfigError(error.message, path) from None


def read_hf_albert(directory: str | Path) -> HfCheckpoint:
    """A transformers AlbertForPreTraining / AlbertForMaskedLM / AlbertModel directory -> ours,
    in eval mode; absent is ("pooler",) when the file has none (initialised as transformers)."""
    directory = Path(directory)
    config = config_from_hf(_read_json(directory / "config.json"), directory / "config.json")
    weights, weights_path = _read_weights(directory)
    ours = state_dict_from_hf(weights, config, weights_path)
    model = build_pretraining_model(
        config,
        with_pair_head="pair_head.linear.weight" in ours,
        with_mlm_head="mlm_head.bias" in ours,
    )
    missing = load_converted(model, ours, weights_path)
    return HfCheckpoint(config, model.eval(), ("pooler",) if missing else ())


def save_hf_albert(model: PretrainingModel, config: AlbertConfig, directory: str | Path) -> None:
    """config.json + model.safetensors that transformers' from_pretrained loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = state_dict_to_hf(model.state_dict(), config)
    hf_config = config_to_hf(config, model.pair_head is not None, model.mlm_head is not None)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
