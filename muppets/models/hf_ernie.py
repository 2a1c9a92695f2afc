"""Hugging Face ERNIE (ErnieForMaskedLM, ErnieForPreTraining, ErnieModel) <-> our BERT.

ERNIE 1.0 (Sun et al. 2019) changes only how pretraining masks (data/unit_masking.py): its
network is BERT's. transformers' modeling_ernie.py is modeling_bert.py with the encoder prefix
"ernie." and one more embedding table when `use_task_id` is set (ERNIE 2.0/3.0 checkpoints):
`task_type_embeddings` (task_type_vocab_size, H), added to every token's embedding sum before the
LayerNorm, row `task_type_ids` (zeros when not given, as every BERT-style caller leaves it).

So an ERNIE directory reads as a BERT one after a rename, with row 0 of the task table folded into
every row of the token-type table: word + position + type + task[0] is then computed exactly as
transformers does for task id 0 (a checkpoint used with other task ids is not what this covers).
Writing goes the other way, with use_task_id false (no task table), so the file loads in
transformers as ErnieForMaskedLM / ErnieForPreTraining / ErnieModel.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from muppets.errors import ConfigError, InputError
from muppets.models.bert import BertConfig
from muppets.models.heads import PretrainingModel
from muppets.models.hf import (
    HfCheckpoint,
    _read_json,
    _read_weights,
    bert_state_dict_from_hf,
    bert_state_dict_to_hf,
    config_from_hf,
    config_to_hf,
    load_converted,
)
from muppets.models.registry import build_pretraining_model

TASK_TABLE = "bert.embeddings.task_type_embeddings.weight"  # after the rename below
TOKEN_TYPES = "bert.embeddings.token_type_embeddings.weight"
ERNIE_FIELDS = ("task_type_vocab_size", "use_task_id")  # what BERT's config does not have
ARCHITECTURES = {  # (MLM head, pair head) -> the transformers class
    (True, True): "ErnieForPreTraining",
    (True, False): "ErnieForMaskedLM",
    (False, False): "ErnieModel",
}


def is_ernie(values: dict) -> bool:
    return values.get("model_type") == "ernie"


def ernie_config_to_bert(values: dict) -> dict:
    """An ERNIE config.json dict -> a BERT one (model_type bert, no task-type fields)."""
    out = {k: v for k, v in values.items() if k not in ERNIE_FIELDS}
    return {**out, "model_type": "bert"}


def ernie_state_dict_to_bert(sd: dict[str, Tensor], values: dict, path: object) -> dict:
    """transformers' ERNIE names -> its BERT names ("ernie." or none -> "bert."; heads keep
    theirs), with task row 0 folded into the token types."""
    sd = {k.removeprefix("ernie."): v for k, v in sd.items()}
    sd = {(k if k.startswith("cls.") else "bert." + k): v for k, v in sd.items()}
    task = sd.pop(TASK_TABLE, None)
    if values.get("use_task_id") and task is None:
        raise InputError(f"config says use_task_id but the weights have no {TASK_TABLE}", path)
    if task is not None and TOKEN_TYPES in sd:
        sd[TOKEN_TYPES] = sd[TOKEN_TYPES] + task[0]  # (types, H) + (H,): task id 0 always
    return sd


def read_hf_ernie(directory: str | Path) -> HfCheckpoint:
    """A transformers ERNIE directory (MLM / pretraining / bare encoder) -> our BERT, eval mode."""
    directory = Path(directory)
    config_path = directory / "config.json"
    values = _read_json(config_path)
    try:
        config = config_from_hf(ernie_config_to_bert(values))
    except ConfigError as e:
        raise ConfigError(e.message, config_path) from None
    weights, weights_path = _read_weights(directory)
    hf = ernie_state_dict_to_bert(weights, values, weights_path)
    ours = bert_state_dict_from_hf(hf, config, weights_path)
    model = build_pretraining_model(
        config,
        with_pair_head="pair_head.linear.weight" in ours,
        with_mlm_head="mlm_head.bias" in ours,
    )
    missing = load_converted(model, ours, weights_path)
    return HfCheckpoint(config, model.eval(), ("pooler",) if missing else ())


def save_hf_ernie(model: PretrainingModel, config: BertConfig, directory: str | Path) -> None:
    """config.json + model.safetensors that transformers loads as ErnieForMaskedLM (an MLM head),
    ErnieForPreTraining (MLM + NSP) or ErnieModel (the encoder alone)."""
    from safetensors.torch import save_file

    if config.model_type != "bert":
        raise ConfigError(f"only a BERT converts to ERNIE, not model_type {config.model_type!r}")
    heads = (model.mlm_head is not None, model.pair_head is not None)
    if heads not in ARCHITECTURES:
        raise ConfigError("an NSP head without an MLM head has no ERNIE class in transformers")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = bert_state_dict_to_hf(model.state_dict(), config)
    renamed = {("ernie." + k[5:] if k.startswith("bert.") else k): v for k, v in sd.items()}
    if not heads[0]:  # ErnieModel files are unprefixed, as BertModel's
        renamed = sd
    values = config_to_hf(config, with_pair_head=heads[1], with_mlm_head=heads[0])
    values.update(
        architectures=[ARCHITECTURES[heads]],
        model_type="ernie",
        use_task_id=False,
        task_type_vocab_size=3,
    )
    (directory / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in renamed.items()}
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
