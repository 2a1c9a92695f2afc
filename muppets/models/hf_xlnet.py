"""Hugging Face transformers <-> muppets conversion for XLNet, as a key table (hf.py's style).

Ours (xlnet.py) against transformers' modeling_xlnet.py: XLNetLMHeadModel (`transformer.*` and
`lm_loss.bias`; `lm_loss.weight` is the word embeddings, tied and left out) and XLNetModel (the
same names without the `transformer.` prefix). The attention tensors are XLNet's own
[d_model, n_head, d_head], so every row is a plain rename.

Two config values are spelled differently: transformers' clamp_len -1 (any value <= 0) is no
clamp, our 0; its mem_len None or 0 keeps the whole segment as memory, our None, while our 0 (no
memory) is written as mem_len None with use_mems_eval / use_mems_train off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save_file
from torch import Tensor

from muppets.errors import ConfigError, InputError
from muppets.models.hf import _check_keys, _read_json, _read_weights, load_converted
from muppets.models.xlnet import XLNetConfig, XLNetLMHeadModel

_ATTENTION = ("q", "k", "v", "o", "r", "r_w_bias", "r_r_bias", "r_s_bias", "seg_embed")
_LAYER = [
    *(
        (f"encoder.layers.{{i}}.attention.{n}", f"transformer.layer.{{i}}.rel_attn.{n}")
        for n in _ATTENTION
    ),
    ("encoder.layers.{i}.attention_norm.{wb}", "transformer.layer.{i}.rel_attn.layer_norm.{wb}"),
    ("encoder.layers.{i}.feed_forward.up.{wb}", "transformer.layer.{i}.ff.layer_1.{wb}"),
    ("encoder.layers.{i}.feed_forward.down.{wb}", "transformer.layer.{i}.ff.layer_2.{wb}"),
    ("encoder.layers.{i}.feed_forward_norm.{wb}", "transformer.layer.{i}.ff.layer_norm.{wb}"),
]
_EMBEDDINGS = [
    ("encoder.word_embeddings.weight", "transformer.word_embedding.weight"),
    ("encoder.mask_emb", "transformer.mask_emb"),
]
_LM_HEAD = [("mlm_head.bias", "lm_loss.bias")]
_TIED = "lm_loss.weight"
ARCHITECTURES = {True: "XLNetLMHeadModel", False: "XLNetModel"}


def key_table(config: XLNetConfig, with_mlm_head: bool) -> list[tuple[str, str]]:
    """Rows (our key, transformers' key) for a model with this config."""
    rows = [(r, 0) for r in _EMBEDDINGS]
    rows += [(r, i) for i in range(config.n_layer) for r in _LAYER]
    rows += [(r, 0) for r in (_LM_HEAD if with_mlm_head else [])]
    table = []
    for (ours, theirs), i in rows:
        for wb in ("weight", "bias") if "{wb}" in ours else ("",):
            table.append((ours.format(i=i, wb=wb), theirs.format(i=i, wb=wb)))
    return table


def state_dict_to_hf(state_dict: dict[str, Tensor], config: XLNetConfig) -> dict[str, Tensor]:
    """XLNetLMHeadModel state dict -> transformers' (XLNetModel's unprefixed without a head)."""
    with_mlm_head = "mlm_head.bias" in state_dict
    table = key_table(config, with_mlm_head)
    _check_keys(set(state_dict), {ours for ours, _ in table}, None, "muppets state dict")
    out = {theirs: state_dict[ours] for ours, theirs in table}
    if not with_mlm_head:
        out = {k.removeprefix("transformer."): v for k, v in out.items()}
    return out


def state_dict_from_hf(
    state_dict: dict[str, Tensor], config: XLNetConfig, path: object = None
) -> dict[str, Tensor]:
    """transformers' state dict -> ours; the tied decoder copy must be the word embeddings."""
    sd = dict(state_dict)
    if not any(k.startswith("transformer.") for k in sd):  # saved from XLNetModel
        sd = {f"transformer.{k}": v for k, v in sd.items()}
    decoder = sd.pop(_TIED, None)
    if decoder is not None and not torch.equal(decoder, sd.get(_EMBEDDINGS[0][1], decoder)):
        raise InputError(
            f"{_TIED} differs from the word embeddings: untied decoders are not supported", path
        )
    table = key_table(config, with_mlm_head="lm_loss.bias" in sd)
    _check_keys(set(sd), {theirs for _, theirs in table}, path, "checkpoint keys")
    return {ours: sd[theirs] for ours, theirs in table}


def config_to_hf(config: XLNetConfig, with_mlm_head: bool = True) -> dict[str, Any]:
    d = config.to_dict()
    d["d_head"] = config.d_head
    d["clamp_len"] = config.clamp_len or -1
    no_memory = config.mem_len == 0
    d["mem_len"] = None if no_memory else config.mem_len
    d.update(use_mems_eval=not no_memory, use_mems_train=False)
    return {"architectures": [ARCHITECTURES[with_mlm_head]], **d, "tie_word_embeddings": True}


def config_from_hf(d: dict[str, Any], path: object = None) -> XLNetConfig:
    """A transformers config.json dict -> ours; a bad field names the file."""
    if d.get("tie_word_embeddings") is False:
        raise ConfigError("config field tie_word_embeddings=False: XLNet's decoder is tied", path)
    try:  # transformers' spellings of clamp_len and mem_len: read by from_dict
        return XLNetConfig.from_dict({"architectures": None, **d, "model_type": "xlnet"})
    except ConfigError as error:
        raise ConfigError(error.message, path) from None


class HfXLNet(NamedTuple):
    config: XLNetConfig
    model: XLNetLMHeadModel  # in eval mode; mlm_head None for an XLNetModel file
    absent: tuple[str, ...]  # always empty: XLNet files hold everything


def read_hf_xlnet(directory: str | Path) -> HfXLNet:
    """A transformers XLNetLMHeadModel / XLNetModel directory -> ours, in eval mode."""
    directory = Path(directory)
    config = config_from_hf(_read_json(directory / "config.json"), directory / "config.json")
    weights, weights_path = _read_weights(directory)
    ours = state_dict_from_hf(weights, config, weights_path)
    model = XLNetLMHeadModel(config, with_mlm_head="mlm_head.bias" in ours)
    load_converted(model, ours, weights_path)
    return HfXLNet(config, model.eval(), ())


def save_hf_xlnet(model: XLNetLMHeadModel, config: XLNetConfig, directory: str | Path) -> None:
    """config.json + model.safetensors that transformers' from_pretrained loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = state_dict_to_hf(model.state_dict(), config)
    hf_config = config_to_hf(config, model.mlm_head is not None)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
