"""Hugging Face transformers <-> muppets conversion for ELECTRA, as key tables (hf.py's style).

transformers keeps the two towers as two models: ElectraForPreTraining (the discriminator) and
ElectraForMaskedLM (the generator), each with its own copy of the embeddings (ELECTRA ties them
while training: run_pretraining.py, tie_embeddings). Our checkpoint holds both towers over one
embeddings module. A transformers ELECTRA directory here is the discriminator's, with the
generator's in its `generator/` sub-directory (from_pretrained on the directory loads the
discriminator, as google/electra-*-discriminator; the generator is optional).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from muppets.errors import ConfigError, InputError
from muppets.models.electra import ElectraConfig, ElectraPretrainingModel
from muppets.models.hf import _EMBEDDINGS, _LAYER, _check_keys, _read_json, _read_weights

GENERATOR_DIR = "generator"
ARCHITECTURES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
_HEADS = {
    "discriminator": [
        ("discriminator_head.dense.{wb}", "discriminator_predictions.dense.{wb}"),
        ("discriminator_head.prediction.{wb}", "discriminator_predictions.dense_prediction.{wb}"),
    ],
    # The decoder weight is the word embeddings (tied: generator_lm_head.weight is not stored).
    "generator": [
        ("generator_head.dense.{wb}", "generator_predictions.dense.{wb}"),
        ("generator_head.norm.{wb}", "generator_predictions.LayerNorm.{wb}"),
        ("generator_head.bias", "generator_lm_head.bias"),
    ],
}
_PROJECT = [("encoder.embeddings_project.{wb}", "{base}.embeddings_project.{wb}")]
_TIED = "generator_lm_head.weight"


def _tower_config(config: ElectraConfig, tower: str):
    return config.generator_config() if tower == "generator" else config.discriminator_config()


def key_table(config: ElectraConfig, tower: str) -> list[tuple[str, tuple[str, ...]]]:
    """Rows (our key, (HF keys...)) of one tower: ours under `<tower>.*`, HF's under `electra.*`."""
    if config.pre_layer_norm:
        raise ConfigError("config field pre_layer_norm=True: transformers' ELECTRA is post-LN")
    c = _tower_config(config, tower)
    project = config.embedding_size != c.hidden_size
    rows = [(r, 0) for r in _EMBEDDINGS + (_PROJECT if project else [])]
    rows += [(r, i) for i in range(c.num_hidden_layers) for r in _LAYER]
    rows += [(r, 0) for r in _HEADS[tower]]
    table = []
    for row, i in rows:
        for wb in ("weight", "bias") if "{wb}" in row[0] else ("",):
            ours, *theirs = (name.format(base="electra", i=i, wb=wb) for name in row)
            if ours.startswith("encoder."):
                ours = f"{tower}.{ours[len('encoder.') :]}"
            table.append((ours, tuple(theirs)))
    return table


def state_dict_to_hf(
    state_dict: dict[str, Tensor], config: ElectraConfig, tower: str
) -> dict[str, Tensor]:
    """Our state dict -> one tower's transformers state dict (poolers have no HF equivalent)."""
    table = key_table(config, tower)
    out = {}
    for ours, theirs in table:
        if len(theirs) == 1:
            out[theirs[0]] = state_dict[ours]
        else:  # fused QKV -> query, key, value; cloned so each owns its memory
            parts = state_dict[ours].chunk(len(theirs))
            out.update({name: part.clone() for name, part in zip(theirs, parts, strict=True)})
    return out


def _normalise(sd: dict[str, Tensor], path: object) -> dict[str, Tensor]:
    """TF-era gamma/beta, headless ElectraModel files, stored buffers and the tied decoder."""
    for old, new in {
        "LayerNorm.gamma": "LayerNorm.weight",
        "LayerNorm.beta": "LayerNorm.bias",
    }.items():
        sd = {k.replace(old, new): v for k, v in sd.items()}
    if not any(k.startswith("electra.") for k in sd):
        sd = {
            k if k.startswith(("discriminator_", "generator_")) else f"electra.{k}": v
            for k, v in sd.items()
        }
    sd = {k: v for k, v in sd.items() if not k.endswith((".position_ids", ".token_type_ids"))}
    decoder = sd.pop(_TIED, None)
    words = sd.get("electra.embeddings.word_embeddings.weight")
    if decoder is not None and words is not None and not torch.equal(decoder, words):
        raise InputError(
            f"{_TIED} differs from the word embeddings: untied decoders are not supported", path
        )
    return sd


def _tower_from_hf(
    sd: dict[str, Tensor], config: ElectraConfig, tower: str, path: object
) -> dict[str, Tensor]:
    sd = _normalise(sd, path)
    table = key_table(config, tower)
    if tower == "discriminator" and "discriminator_predictions.dense.weight" not in sd:
        table = [row for row in table if not row[0].startswith("discriminator_head.")]
    _check_keys(set(sd), {n for _, theirs in table for n in theirs}, path, "checkpoint keys")
    return {
        ours: torch.cat([sd[n] for n in theirs]) if len(theirs) > 1 else sd[theirs[0]]
        for ours, theirs in table
    }


def state_dict_from_hf(
    discriminator: dict[str, Tensor],
    generator: dict[str, Tensor] | None,
    config: ElectraConfig,
    paths: tuple[object, object] = (None, None),
) -> dict[str, Tensor]:
    """Both towers' transformers state dicts (or the discriminator's alone) -> ours. The two
    copies of the embeddings must be one (they are tied in ELECTRA's pretraining)."""
    ours = _tower_from_hf(discriminator, config, "discriminator", paths[0])
    if generator is not None:
        gen = _tower_from_hf(generator, config, "generator", paths[1])
        for key, tensor in gen.items():
            twin = "discriminator." + key[len("generator.") :]
            if key.startswith("generator.embeddings.") and not torch.equal(tensor, ours[twin]):
                raise InputError(
                    f"the generator's and the discriminator's embeddings disagree ({key}): "
                    "ELECTRA shares them, so these are not the two towers of one model",
                    paths[1],
                )
        ours.update(gen)
    return ours


def config_to_hf(config: ElectraConfig, tower: str) -> dict[str, Any]:
    """One tower's transformers config.json dict (the generator's with its own sizes)."""
    c = _tower_config(config, tower)
    d = {k: v for k, v in config.to_dict().items() if k != "pre_layer_norm"}
    d.update(
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
    )
    return {"architectures": [ARCHITECTURES[tower]], **d, "tie_word_embeddings": True}


def config_from_hf(
    discriminator: dict, generator: dict | None, path: object = None
) -> ElectraConfig:
    """transformers config dicts -> ours. The generator's size must be the reference's rule over
    the discriminator's (get_generator_config), as google's released pairs are."""
    try:
        values = dict(discriminator)
        if generator is not None:
            values["generator_hidden_size"] = (
                generator["hidden_size"] / discriminator["hidden_size"]
            )
            layers = generator["num_hidden_layers"] / discriminator["num_hidden_layers"]
            values["generator_layers"] = layers
        config = ElectraConfig.from_dict({**values, "model_type": "electra"})
    except (ConfigError, KeyError) as error:
        message = error.message if isinstance(error, ConfigError) else f"missing key {error}"
        raise ConfigError(message, path) from None
    if generator is not None:
        g = config.generator_config()
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        ):
            if generator.get(name, getattr(g, name)) != getattr(g, name):
                raise ConfigError(
                    f"generator config field {name}={generator[name]}: ELECTRA's generator "
                    f"rule gives {getattr(g, name)} for this discriminator (get_generator_config)",
                    path,
                )
        for name in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size"):
            if generator.get(name) != discriminator.get(name):
                raise ConfigError(
                    f"generator config field {name}={generator.get(name)}: the discriminator has "
                    f"{discriminator.get(name)} (the towers share their embeddings)",
                    path,
                )
    return config


def refuse_generator(config: dict, path: object) -> None:
    """A transformers generator directory where the discriminator's is wanted: one clear line."""
    if ARCHITECTURES["generator"] in (config.get("architectures") or []):
        raise InputError(
            "is an ELECTRA generator (ElectraForMaskedLM): give the discriminator's directory "
            "(ElectraForPreTraining), with the generator in its generator/ sub-directory",
            path,
        )


def load_hf_electra(directory: str | Path) -> tuple[ElectraConfig, ElectraPretrainingModel]:
    """A transformers ElectraForPreTraining directory (+ `generator/` when present) -> ours."""
    config, model, _ = read_hf_electra(directory)
    return config, model


def read_hf_electra(
    directory: str | Path,
) -> tuple[ElectraConfig, ElectraPretrainingModel, tuple[str, ...]]:
    """load_hf_electra, and what the file lacked: ("discriminator head",) for an ElectraModel
    file (the head keeps transformers' initialisation, N(0, initializer_range))."""
    directory = Path(directory)
    disc_config = _read_json(directory / "config.json")
    refuse_generator(disc_config, directory / "config.json")
    gen_dir = directory / GENERATOR_DIR
    gen_config = (
        _read_json(gen_dir / "config.json") if (gen_dir / "config.json").is_file() else None
    )
    config = config_from_hf(disc_config, gen_config, directory / "config.json")
    disc_sd, disc_path = _read_weights(directory)
    gen_sd, gen_path = _read_weights(gen_dir) if gen_config is not None else (None, None)
    ours = state_dict_from_hf(disc_sd, gen_sd, config, (disc_path, gen_path))
    model = ElectraPretrainingModel(config, with_generator=gen_sd is not None)
    expected = model.state_dict()
    for key, tensor in ours.items():
        if tensor.shape != expected[key].shape:
            raise InputError(
                f"{key} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(expected[key].shape)}",
                disc_path,
            )
    # The generator's embeddings are the discriminator's module: loading one name loads both.
    missing, unexpected = model.load_state_dict(ours, strict=False)
    allowed = ("discriminator.pooler.", "generator.pooler.", "generator.embeddings.")
    allowed += ("discriminator_head.",) if "discriminator_head.dense.weight" not in ours else ()
    assert not unexpected and all(k.startswith(allowed) for k in missing), (missing, unexpected)
    absent = ("discriminator head",) if "discriminator_head.dense.weight" not in ours else ()
    return config, model.eval(), absent


def save_hf_electra(
    model: ElectraPretrainingModel, config: ElectraConfig, directory: str | Path
) -> list[Path]:
    """The discriminator in `directory`, the generator (if any) in `directory/generator`; each
    loads with transformers' from_pretrained. Returns the directories written."""
    directory = Path(directory)
    state = model.state_dict()
    towers = ["discriminator"] + (["generator"] if model.generator is not None else [])
    written = []
    for tower in towers:
        out = directory if tower == "discriminator" else directory / GENERATOR_DIR
        out.mkdir(parents=True, exist_ok=True)
        sd = state_dict_to_hf(state, config, tower)
        text = json.dumps(config_to_hf(config, tower), indent=2, sort_keys=True) + "\n"
        (out / "config.json").write_text(text)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
        written.append(out)
    return written
