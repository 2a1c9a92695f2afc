"""Hugging Face transformers <-> muppets conversion for BERT and RoBERTa, as key tables.

Our names (heads.py, bert.py, layers.py) against transformers' modeling_bert.py /
modeling_roberta.py. One row maps our tensor to one HF tensor, or to several concatenated along
dim 0 (our fused QKV projection = HF's query, key, value). A checkpoint directory is config.json +
model.safetensors (or pytorch_model.bin, read with weights_only=True). transformers itself is
never imported: conversion is a table over state dicts and config dicts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from muppets.errors import ConfigError, InputError
from muppets.models.bert import MODEL_TYPES, BertConfig
from muppets.models.heads import PretrainingModel
from muppets.models.registry import build_pretraining_model

# "{wb}" stands for both ".weight" and ".bias"; "{i}" for the layer index; "{base}" for the HF
# encoder prefix ("bert" / "roberta").
_EMBEDDINGS = [
    ("encoder.embeddings.word_embeddings.weight", "{base}.embeddings.word_embeddings.weight"),
    (
        "encoder.embeddings.position_embeddings.weight",
        "{base}.embeddings.position_embeddings.weight",
    ),
    (
        "encoder.embeddings.token_type_embeddings.weight",
        "{base}.embeddings.token_type_embeddings.weight",
    ),
    ("encoder.embeddings.norm.{wb}", "{base}.embeddings.LayerNorm.{wb}"),
]
_LAYER = [
    (
        "encoder.layers.{i}.attention.qkv.{wb}",
        "{base}.encoder.layer.{i}.attention.self.query.{wb}",
        "{base}.encoder.layer.{i}.attention.self.key.{wb}",
        "{base}.encoder.layer.{i}.attention.self.value.{wb}",
    ),
    (
        "encoder.layers.{i}.attention.out.{wb}",
        "{base}.encoder.layer.{i}.attention.output.dense.{wb}",
    ),
    (
        "encoder.layers.{i}.attention_norm.{wb}",
        "{base}.encoder.layer.{i}.attention.output.LayerNorm.{wb}",
    ),
    ("encoder.layers.{i}.feed_forward.up.{wb}", "{base}.encoder.layer.{i}.intermediate.dense.{wb}"),
    ("encoder.layers.{i}.feed_forward.down.{wb}", "{base}.encoder.layer.{i}.output.dense.{wb}"),
    ("encoder.layers.{i}.feed_forward_norm.{wb}", "{base}.encoder.layer.{i}.output.LayerNorm.{wb}"),
]
_POOLER = [("encoder.pooler.dense.{wb}", "{base}.pooler.dense.{wb}")]
# The decoder weight is tied to the word embeddings and its bias to the head's bias, so neither
# is stored: transformers' save_pretrained leaves tied copies out too.
_MLM_HEAD = {
    "bert": [
        ("mlm_head.dense.{wb}", "cls.predictions.transform.dense.{wb}"),
        ("mlm_head.norm.{wb}", "cls.predictions.transform.LayerNorm.{wb}"),
        ("mlm_head.bias", "cls.predictions.bias"),
    ],
    "roberta": [
        ("mlm_head.dense.{wb}", "lm_head.dense.{wb}"),
        ("mlm_head.norm.{wb}", "lm_head.layer_norm.{wb}"),
        ("mlm_head.bias", "lm_head.bias"),
    ],
}
_PAIR_HEAD = [("pair_head.linear.{wb}", "cls.seq_relationship.{wb}")]
# HF tied copies of tensors we store once: dropped on load after checking they are the same.
_TIED = {"bert": "cls.predictions.decoder", "roberta": "lm_head.decoder"}
# (model_type, MLM head, pair head) -> the transformers class whose save_pretrained writes them.
ARCHITECTURES = {
    ("bert", True, True): "BertForPreTraining",
    ("bert", True, False): "BertForMaskedLM",
    ("bert", False, True): "BertForNextSentencePrediction",
    ("bert", False, False): "BertModel",
    ("roberta", True, False): "RobertaForMaskedLM",
    ("roberta", False, False): "RobertaModel",
}


def _require_post_ln(config: BertConfig) -> None:
    if config.pre_layer_norm:
        raise ConfigError(
            "config field pre_layer_norm=True: transformers' BERT and RoBERTa are "
            "post-LN, so there is no Hugging Face equivalent"
        )


def key_table(
    config: BertConfig, with_pair_head: bool, with_mlm_head: bool = True
) -> list[tuple[str, tuple[str, ...]]]:
    """Rows (our key, (HF keys...)) for a model with this config."""
    _require_post_ln(config)
    t = config.model_type
    rows = [(r, 0) for r in _EMBEDDINGS]
    rows += [(r, i) for i in range(config.num_hidden_layers) for r in _LAYER]
    heads = (_MLM_HEAD[t] if with_mlm_head else []) + (_PAIR_HEAD if with_pair_head else [])
    rows += [(r, 0) for r in _POOLER + heads]
    table = []
    for row, i in rows:
        for wb in ("weight", "bias") if "{wb}" in row[0] else ("",):
            ours, *theirs = (name.format(base=t, i=i, wb=wb) for name in row)
            table.append((ours, tuple(theirs)))
    return table


def _check_keys(have: set[str], want: set[str], path: object, what: str) -> None:
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({', '.join(missing[:4])})"] if missing else []
        parts += (
            [f"{len(unexpected)} unexpected ({', '.join(unexpected[:4])})"] if unexpected else []
        )
        raise InputError(f"{what} does not match the config: " + "; ".join(parts), path)


def bert_state_dict_to_hf(state_dict: dict[str, Tensor], config: BertConfig) -> dict[str, Tensor]:
    """PretrainingModel state dict -> the transformers one (BertForPreTraining,
    RobertaForMaskedLM, ...; an encoder alone as BertModel / RobertaModel save it: unprefixed)."""
    with_mlm_head = "mlm_head.bias" in state_dict
    table = key_table(config, "pair_head.linear.weight" in state_dict, with_mlm_head)
    _check_keys(set(state_dict), {ours for ours, _ in table}, None, "muppets state dict")
    out = {}
    for ours, theirs in table:
        if len(theirs) == 1:
            out[theirs[0]] = state_dict[ours]
        else:  # chunk() gives views of one storage; clone so each HF tensor owns its memory
            parts = state_dict[ours].chunk(len(theirs))
            out.update({name: part.clone() for name, part in zip(theirs, parts, strict=True)})
    if not with_mlm_head and "pair_head.linear.weight" not in state_dict:
        prefix = config.model_type + "."
        out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _normalise_hf_keys(
    sd: dict[str, Tensor], config: BertConfig, path: object
) -> dict[str, Tensor]:
    """Old spellings (TF-era gamma/beta, headless BertModel files, stored buffers, tied copies)."""
    base = config.model_type
    respell = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
    for old, new in respell.items():
        sd = {k.replace(old, new): v for k, v in sd.items()}
    if not any(k.startswith(base + ".") for k in sd):
        sd = {f"{base}.{k}": v for k, v in sd.items()}  # saved from BertModel / RobertaModel
    sd = {k: v for k, v in sd.items() if not k.endswith((".position_ids", ".token_type_ids"))}
    tied, head_bias = _TIED[base], _MLM_HEAD[base][-1][1]
    decoder = sd.pop(f"{tied}.weight", None)
    words = sd.get(f"{base}.embeddings.word_embeddings.weight")
    if decoder is not None and words is not None and not torch.equal(decoder, words):
        raise InputError(
            f"{tied}.weight differs from the word embeddings: untied decoders are not supported",
            path,
        )
    decoder_bias = sd.pop(f"{tied}.bias", None)
    if decoder_bias is not None:
        sd.setdefault(head_bias, decoder_bias)
    return sd


def bert_state_dict_from_hf(
    state_dict: dict[str, Tensor], config: BertConfig, path: object = None
) -> dict[str, Tensor]:
    """transformers state dict -> ours. Files without a pooler (BertForMaskedLM,
    RobertaForMaskedLM) leave `encoder.pooler.*` out, files without an MLM head (BertModel)
    `mlm_head.*`: load_hf_checkpoint then keeps an initial pooler / builds no MLM head."""
    sd = _normalise_hf_keys(state_dict, config, path)
    t = config.model_type
    with_mlm_head = any(theirs.format(wb="weight") in sd for _, theirs in _MLM_HEAD[t])
    table = key_table(config, "cls.seq_relationship.weight" in sd, with_mlm_head)
    if f"{t}.pooler.dense.weight" not in sd and f"{t}.pooler.dense.bias" not in sd:
        table = [row for row in table if not row[0].startswith("encoder.pooler.")]
    _check_keys(set(sd), {name for _, theirs in table for name in theirs}, path, "checkpoint keys")
    return {
        ours: torch.cat([sd[n] for n in theirs]) if len(theirs) > 1 else sd[theirs[0]]
        for ours, theirs in table
    }


def config_to_hf(
    config: BertConfig, with_pair_head: bool = True, with_mlm_head: bool = True
) -> dict[str, Any]:
    """Our config -> a transformers config.json dict (RoBERTa has no pair head in transformers:
    its pair head, if any, is left out of the architecture name)."""
    _require_post_ln(config)
    d = config.to_dict()
    del d["pre_layer_norm"]
    pair = with_pair_head and config.model_type == "bert"
    arch = ARCHITECTURES[(config.model_type, with_mlm_head, pair)]
    return {"architectures": [arch], **d, "tie_word_embeddings": True}


def config_from_hf(d: dict[str, Any]) -> BertConfig:
    """A transformers config.json dict -> our config; refuses what our encoder cannot be."""
    for field, bad in (
        ("is_decoder", True),
        ("add_cross_attention", True),
        ("tie_word_embeddings", False),
    ):
        if d.get(field) is bad:
            raise ConfigError(
                f"config field {field}={bad}: not supported (a tied bidirectional encoder)"
            )
    return BertConfig.from_dict(d)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", path, e.lineno) from None
    if not isinstance(d, dict):
        raise InputError("expected a JSON object", path)
    return d


def _read_weights(directory: Path) -> tuple[dict[str, Tensor], Path]:
    """model.safetensors, its sharded form (.index.json), or pytorch_model.bin (weights only)."""
    single, index, pickle = (
        directory / n
        for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )
    if single.exists() or index.exists():
        files = [single]
        if not single.exists():
            files = [directory / f for f in sorted(set(_read_json(index)["weight_map"].values()))]
        sd = {}
        for f in files:
            try:
                sd.update(load_file(f))
            except (SafetensorError, OSError) as e:
                raise InputError(
                    f"cannot read safetensors weights (truncated or corrupted?): {e}", f
                ) from None
        return sd, files[0]
    if pickle.exists():
        try:
            return torch.load(pickle, map_location="cpu", weights_only=True), pickle
        except Exception as e:  # an unpickling error of any kind: the file is the problem
            raise InputError(_pickle_refusal(e), pickle) from None
    raise InputError(
        "no model.safetensors or pytorch_model.bin in the checkpoint directory", directory
    )


def _pickle_refusal(error: Exception) -> str:
    """One line for torch.load's refusal (several lines of advice, among them to load with
    weights_only=False, which would run the pickle's code) or any other unreadable pickle."""
    text = str(error)
    found = re.search(r"unsupported GLOBAL (\S+)", text) or re.search(r"GLOBAL (\S+)", text)
    if "Weights only load failed" in text or found:
        what = f" ({found.group(1)})" if found else ""
        return (
            f"refused: this pickle holds more than tensors{what} and loading it could run code; "
            "save the weights as model.safetensors from a copy you trust"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"cannot read PyTorch weights: {first}"


class HfFiles(NamedTuple):
    """A transformers BERT/RoBERTa directory read: its config.json, our config, its weights."""

    values: dict[str, Any]  # config.json as written
    config: BertConfig
    weights: dict[str, Tensor]  # transformers' names
    weights_path: Path


def read_hf_directory(directory: str | Path) -> HfFiles:
    """config.json (its model_type checked) and the weights of a transformers directory."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise InputError(
            "missing config.json (expected a Hugging Face checkpoint directory)", config_path
        )
    d = _read_json(config_path)
    if d.get("model_type", "bert") not in MODEL_TYPES:
        raise InputError(
            f"unsupported model_type {d.get('model_type')!r}; supported: " + ", ".join(MODEL_TYPES),
            config_path,
        )
    try:
        config = config_from_hf(d)
    except ConfigError as e:
        raise ConfigError(e.message, config_path) from None
    weights, weights_path = _read_weights(directory)
    return HfFiles(d, config, weights, weights_path)


def load_converted(model: torch.nn.Module, ours: dict[str, Tensor], path: object) -> list[str]:
    """Load converted tensors (shapes checked against config.json); returns the model's keys the
    file did not hold, left at their initial values (a pooler that transformers also
    initialises: BertForMaskedLM files, QA and token-classification heads)."""
    expected = model.state_dict()
    for key, tensor in ours.items():
        if tensor.shape != expected[key].shape:
            raise InputError(
                f"{key} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(expected[key].shape)}",
                path,
            )
    missing, unexpected = model.load_state_dict(ours, strict=False)
    assert not unexpected and all(k.startswith("encoder.pooler.") for k in missing), missing
    return missing


class HfCheckpoint(NamedTuple):
    config: BertConfig
    model: PretrainingModel  # in eval mode; mlm_head None for BertModel / RobertaModel files
    absent: tuple[str, ...]  # "pooler" when the file has none (initialised as transformers does)


def read_hf_checkpoint(directory: str | Path) -> HfCheckpoint:
    """A transformers BERT/RoBERTa pretraining or bare-encoder directory -> ours."""
    files = read_hf_directory(directory)
    config = files.config
    ours = bert_state_dict_from_hf(files.weights, config, files.weights_path)
    model = build_pretraining_model(
        config,
        with_pair_head="pair_head.linear.weight" in ours,
        with_mlm_head="mlm_head.bias" in ours,
    )
    missing = load_converted(model, ours, files.weights_path)
    return HfCheckpoint(config, model.eval(), ("pooler",) if missing else ())


def load_hf_checkpoint(directory: str | Path) -> tuple[BertConfig, PretrainingModel]:
    """A transformers BERT/RoBERTa directory -> (config, encoder + heads), in eval mode."""
    checkpoint = read_hf_checkpoint(directory)
    return checkpoint.config, checkpoint.model


def save_hf_checkpoint(model: PretrainingModel, config: BertConfig, directory: str | Path) -> None:
    """Write config.json + model.safetensors that transformers' from_pretrained loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = bert_state_dict_to_hf(model.state_dict(), config)
    heads = {
        "with_pair_head": model.pair_head is not None,
        "with_mlm_head": model.mlm_head is not None,
    }
    hf_config = config_to_hf(config, **heads)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
