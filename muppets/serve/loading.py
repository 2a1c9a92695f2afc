"""Load the model directory given on the command line once, and say what it serves.

Only the operator names a model (`--model DIR`); no request can name a path or a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from muppets.errors import InputError
from muppets.models.heads import PretrainingModel
from muppets.recipes.evaluate import resolve_finetuned_or_explain
from muppets.serve.encoders import EncoderRoutes
from muppets.serve.models import DownstreamRoutes, Route, TaskRoutes
from muppets.serve.onnx_model import is_export, load_export
from muppets.training.checkpoint import read_config
from muppets.training.downstream_model import is_downstream, load_downstream
from muppets.training.pretrained import load_checkpoint, load_elmo, resolve_checkpoint


@dataclass
class Served:
    routes: dict[str, Route]
    info: dict  # what GET /info shows (the routes are added by the app)


def _finetuned(path: Path) -> Path | None:
    """The fine-tuned directory at path, or None for a pretrained checkpoint or run."""
    try:
        return resolve_finetuned_or_explain(path)
    except InputError:  # no task.json: a pretrained checkpoint
        return None


def load_served(path: str | Path, device: torch.device, max_tokens: int, max_inputs: int) -> Served:
    """The routes of the model at `path` on `device`; a directory that does not load raises
    the loaders' own one-line errors (InputError, ConfigError)."""
    path = Path(path)
    if path.is_dir() and is_export(path):  # `muppets export`: ONNX Runtime, the task route
        model, setup, tokenizer, backend = load_export(path)
        routes = TaskRoutes(model, setup, tokenizer, max_tokens).routes()
        info = {"kind": "fine-tuned", "task": setup.task, "head": setup.head, **_labels(setup)}
        return Served(routes, {**info, **_task_info(setup), **backend})
    directory = _finetuned(path)
    if directory is not None:
        if is_downstream(directory):
            downstream = load_downstream(directory, device, max_inputs)
            setup = downstream.setup
            info = {"kind": "downstream", "task": setup.task, "head": setup.head}
            return Served(DownstreamRoutes(downstream).routes(), {**info, **_labels(setup)})
    directory = directory or resolve_checkpoint(path)
    if read_config(directory).get("model_type") == "elmo":
        model, config, _ = load_elmo(directory)
        model.to(device)
        encoder = EncoderRoutes(model, None, None, max_tokens, config.num_layers + 1, elmo=True)
        return Served(
            encoder.routes(),
            {"kind": "elmo", "model_type": "elmo", "layers": config.num_layers + 1},
        )
    loaded = load_checkpoint(directory)
    model, config, tokenizer = loaded.model.to(device), loaded.config, loaded.tokenizer
    positions = config.max_sequence_length
    layers = config.num_hidden_layers + 1
    info = {
        "model_type": read_config(directory).get("model_type", "bert"),
        "layers": layers,
        "max_positions": positions,
        "mask_token": tokenizer.id_to_token(tokenizer.mask_id),
    }
    mlm = model if isinstance(model, PretrainingModel) and model.mlm_head is not None else None
    routes = EncoderRoutes(model.encoder, tokenizer, positions, max_tokens, layers, mlm).routes()
    if loaded.setup is None:
        return Served(routes, {"kind": "pretrained", **info})
    setup = loaded.setup
    task = TaskRoutes(model, setup, tokenizer, max_tokens)
    info.update(kind="fine-tuned", task=setup.task, head=setup.head, **_labels(setup))
    return Served({**task.routes(), **routes}, {**info, **_task_info(setup)})


def _task_info(setup) -> dict:
    info = {"max_seq_length": setup.max_seq_length}
    if setup.head == "span_qa":
        info.update(squad_v2=setup.squad_v2, max_answer_length=setup.max_answer_length)
        info.update(null_threshold=setup.null_threshold, doc_stride=setup.doc_stride)
    return info


def _labels(setup) -> dict:
    return {"labels": list(setup.labels)}
