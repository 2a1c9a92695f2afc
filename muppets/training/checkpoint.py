"""Checkpoint directories: safetensors and JSON only, written atomically, loaded with clear errors.

A model directory (what `save_pretrained` writes and the training loop's checkpoints contain):
  config.json            the model config dict (Hugging Face field names)
  model.safetensors      state dict; a tied tensor is stored once, its other names in the metadata
  <extra files>          copied in as they are (tokenizer files: vocab.txt, tokenizer.json, ...)
A training checkpoint `<out>/checkpoints/step-00001000/` adds:
  optimizer.safetensors  AdamW moments and step counts, keyed "<state key>.<parameter name>"
  trainer_state.json     step, tokens seen, elapsed time, schedule, the run's TrainConfig, the
                         optimizer's param groups, and per rank: data position and RNG states
Nothing is pickled, so loading a checkpoint from someone else cannot run code. Every directory is
written as `<name>.tmp` and renamed into place, so a crash mid-save leaves the last good one intact.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from muppets.errors import InputError

CONFIG, WEIGHTS, OPTIMIZER, TRAINER_STATE = (
    "config.json",
    "model.safetensors",
    "optimizer.safetensors",
    "trainer_state.json",
)
_STEP_DIR = re.compile(r"step-(\d+)")


# ----------------------------------------------------------------------------- tensors on disk


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write `model.state_dict()` to safetensors, storing each tied tensor once.

    safetensors refuses tensors that share memory. A name whose tensor is the same view as an
    earlier one (a tied decoder) is recorded in the metadata as an alias; any other sharing or
    non-contiguous layout is saved as a contiguous copy.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, tensor in model.state_dict().items():
        # Identity is decided on the model's own device: .cpu() of a CUDA tensor is a new copy.
        view = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if view in views:
            aliases[name] = views[view]
            continue
        storage = tensor.untyped_storage().data_ptr()
        shared = storage in storages
        storages.add(storage)
        views[view] = name
        tensor = tensor.detach().cpu()
        tensors[name] = tensor.contiguous().clone() if shared else tensor.contiguous()
    save_file(tensors, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, f.metadata() or {}
    except Exception as error:  # SafetensorError or OSError: truncated, corrupted, not safetensors
        raise InputError(f"cannot read safetensors file ({error})", path) from error


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load `directory/model.safetensors` into `model`; names and shapes must match exactly.

    Aliases are filled from their stored tensor. A tie is structure (one Parameter under two
    names) that the model's constructor creates; loading copies values in and keeps it.
    """
    path = Path(directory) / WEIGHTS
    tensors, metadata = _read_safetensors(path)
    for alias, name in json.loads(metadata.get("aliases", "{}")).items():
        if name in tensors:
            tensors[alias] = tensors[name]
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        names = f"missing {_few(missing)}; unexpected {_few(unexpected)}"
        raise InputError(f"weights do not match the model: {names}", path)
    wrong = [k for k in expected if expected[k].shape != tensors[k].shape]
    if wrong:
        k = wrong[0]
        shapes = f"{tuple(tensors[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
        raise InputError(f"shape of {k}: {shapes} ({len(wrong)} tensors differ)", path)
    model.load_state_dict(tensors, strict=True)


def _few(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ----------------------------------------------------------------------------- config.json


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise InputError("missing config.json (is this a model directory?)", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON: {error.msg}", path, error.lineno) from error


def check_config(directory: str | Path, config_dict: dict, may_differ: Iterable[str] = ()) -> None:
    """Refuse to load a checkpoint into a model built from a different config; name the fields.
    `may_differ`: fields that do not change the weights' meaning (dropout, for --init-from)."""
    saved = read_config(directory)
    now = json.loads(json.dumps(config_dict))  # tuples -> lists, as they were saved
    differ = [
        f"{key} (checkpoint {saved.get(key)!r}, now {now.get(key)!r})"
        for key in sorted((saved.keys() | now.keys()) - set(may_differ))
        if saved.get(key) != now.get(key)
    ]
    if differ:
        raise InputError(
            "the model config differs from the checkpoint's: " + "; ".join(differ),
            Path(directory) / CONFIG,
        )


# ----------------------------------------------------------------------------- directories


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _write_model_files(
    directory: Path, model: nn.Module, config_dict: dict, extra_files: Iterable[str | Path]
) -> None:
    _write_json(directory / CONFIG, config_dict)
    save_weights(model, directory / WEIGHTS)
    for extra in extra_files:
        shutil.copy2(extra, directory / Path(extra).name)


def _staging(target: Path) -> Path:
    """An empty `<target>.tmp` (a leftover from a crashed save is removed)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, target: Path) -> None:
    """fsync the files, then rename `tmp` to `target` (replacing an older `target` if any)."""
    for file in tmp.iterdir():
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if target.exists():  # two renames: a crash in between leaves <target>.old, still complete
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


def save_pretrained(
    directory: str | Path, model: nn.Module, config_dict: dict, extra_files: Iterable = ()
) -> Path:
    """Write a model directory (config.json, model.safetensors, extra files), atomically."""
    target = Path(directory)
    tmp = _staging(target)
    _write_model_files(tmp, model, config_dict, extra_files)
    _publish(tmp, target)
    return target


# ----------------------------------------------------------------------------- optimizer


def _param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[str]:
    """Parameter names in the optimizer's own numbering (group by group, as in its state_dict)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def save_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, path: Path) -> dict:
    """Write the optimizer's tensors to `path`; return the rest (param groups) as JSON data."""
    names = _param_names(optimizer, model)
    state = optimizer.state_dict()
    tensors = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"{key}.{names[index]}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"param_groups": groups}


def load_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, path: Path, saved: dict
) -> None:
    """Inverse of `save_optimizer`; the parameter grouping must be the same as when saved."""
    names = _param_names(optimizer, model)
    index_of = {name: i for i, name in enumerate(names)}
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    now = [names[sum(sizes[:g]) : sum(sizes[: g + 1])] for g in range(len(sizes))]
    if [group["params"] for group in saved["param_groups"]] != now:
        raise InputError("the optimizer's parameter groups differ from the model's", path)
    groups = []
    for group in saved["param_groups"]:  # JSON turned tuples (betas) into lists
        restored = {k: tuple(v) if isinstance(v, list) else v for k, v in group.items()}
        groups.append({**restored, "params": [index_of[n] for n in group["params"]]})
    tensors, _ = _read_safetensors(path)
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        state_key, name = key.split(".", 1)
        if name not in index_of:
            raise InputError(f"optimizer state for unknown parameter {name}", path)
        state.setdefault(index_of[name], {})[state_key] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------- RNG states


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict:
    """Python, numpy and torch (CPU and current CUDA device) RNG states as JSON data."""
    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    state = {
        "python": [version, list(words), gauss],
        "numpy": np_state,
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {**np_state["state"], "key": np.array(np_state["state"]["key"], np.uint32)}
    np.random.set_state(np_state)
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(state["cuda"]))


# ----------------------------------------------------------------------------- training checkpoints


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    config_dict: dict,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
    extra_files: Iterable = (),
    keep: int = 2,
    protect: int | None = None,
) -> Path:
    """Write `root/step-XXXXXXXX` atomically, then delete all but the newest `keep` checkpoints
    and the one of step `protect` (the divergence guard's newest sane checkpoint)."""
    target = Path(root) / f"step-{step:08d}"
    tmp = _staging(target)
    _write_model_files(tmp, model, config_dict, extra_files)
    optimizer_json = save_optimizer(optimizer, model, tmp / OPTIMIZER)
    _write_json(tmp / TRAINER_STATE, {**trainer_state, "optimizer": optimizer_json})
    _publish(tmp, target)
    for old in checkpoints(root)[:-keep]:
        if protect is None or old != Path(root) / f"step-{protect:08d}":
            shutil.rmtree(old)
    return target


def checkpoints(root: str | Path) -> list[Path]:
    """Complete training checkpoints under `root`, oldest first (`.tmp` leftovers ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, config_dict: dict
) -> dict:
    """Restore model and optimizer from a training checkpoint; return its trainer state."""
    directory = Path(directory)
    check_config(directory, config_dict)
    load_weights(model, directory)
    path = directory / TRAINER_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("missing trainer_state.json (not a training checkpoint)", path) from None
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON: {error.msg}", path, error.lineno) from error
    if not isinstance(state, dict) or not isinstance(state.get("optimizer"), dict):
        raise InputError('no "optimizer" object: not a trainer state written by muppets', path)
    load_optimizer(optimizer, model, directory / OPTIMIZER, state["optimizer"])
    return state


def rank_state(state: dict, rank: int, world_size: int, directory: str | Path) -> dict:
    """This rank's {"data", "rng"} entry of a trainer state.

    Same world size: its own entry (bitwise resume). Another world size works only when every
    rank saved the same data position (a global one); RNG states are then not restored.
    """
    entries = _rank_entries(state, Path(directory) / TRAINER_STATE)
    if len(entries) == world_size:
        return entries[rank]
    if all(entry["data"] == entries[0]["data"] for entry in entries):
        return {"data": entries[0]["data"], "rng": None}
    raise InputError(
        f"written by {len(entries)} processes with per-rank data positions; "
        f"resume with {len(entries)} processes, not {world_size}",
        Path(directory) / TRAINER_STATE,
    )


def _rank_entries(state: dict, path: Path) -> list[dict]:
    """state["ranks"], checked: a hand-edited or truncated file must name itself, not KeyError."""
    entries = state.get("ranks") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError('no "ranks" list (one {"data", "rng"} entry per process)', path)
    for r, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"data", "rng"} <= entry.keys():
            raise InputError(f'"ranks"[{r}] must be an object with "data" and "rng"', path)
    return entries
