"""`muppets export --model DIR --out DIR --format onnx [--quantize int8]`: a fine-tuned encoder and
its task head as one ONNX graph that `muppets serve --model OUT` runs through ONNX Runtime.

The graph takes (input_ids, attention_mask, token_type_ids), each (B, T) int64 with dynamic B and
T, and gives one `logits` tensor: (B, T, 2) start/end scores (span QA), (B, T, K) tag scores
(tagging) or (B, K) (classification; regression K = 1), what serve/models.py's forward_features
reads from the PyTorch model. The encoder is traced on its padded path (models/layers.py
make_packing: an exported graph has one branch for every batch), so positions past a row's length
hold scores nobody reads. Before anything is written, ONNX Runtime's scores on a padded batch of
another shape than the traced one must match the PyTorch model's (its packed path, what `predict`
runs) within 1e-4 at every real token. `--quantize int8` then rewrites the Linear layers' weights
as int8 with activations quantized per pass (onnxruntime.quantization.quantize_dynamic): faster on
a CPU, not exact (export.json records how far its scores move; bench/RESULTS.md its dev F1).

The output directory holds model.onnx, task.json, the tokenizer files, the source's config.json
(the vocabulary check) and export.json (what was exported, how, and the measured differences).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from muppets.errors import ConfigError, InputError, MuppetsError
from muppets.tasks.setup import TaskSetup, save_task
from muppets.training.options import option
from muppets.training.pretrained import load_checkpoint, resolve_checkpoint

ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17  # the TorchScript exporter's well-trodden opset; ONNX Runtime 1.18+ runs it
TOLERANCE = 1e-4  # largest |ONNX Runtime - PyTorch| score an fp32 export may have
QUANTIZE = ("none", "int8")


@dataclass
class ExportConfig:
    model: str = option("fine-tuned model directory (classify, tag or qa)", "")
    out: str = option("output directory (muppets serve --model OUT serves it)", "")
    format: str = option("onnx (the one format)", "onnx")
    quantize: str = option("none, or int8: dynamic int8 Linear layers (faster, not exact)", "none")

    def __post_init__(self):
        if not self.model or not self.out:
            raise ConfigError("model and out are required")
        if self.format != "onnx":
            raise ConfigError(f"format must be 'onnx', got {self.format!r}")
        if self.quantize not in QUANTIZE:
            raise ConfigError(
                f"quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}"
            )


class TaskLogits(nn.Module):
    """A task model's scores as one tensor: span QA's start and end stacked on a last axis."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        out = self.model(input_ids, attention_mask, token_type_ids)
        return torch.stack([out.start, out.end], -1) if self.head == "span_qa" else out


def onnx_runtime():
    """The onnxruntime module, or one line saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "ONNX export and serving need onnx and onnxruntime: pip install 'muppets[export]'"
        ) from None
    return onnxruntime


def session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session on `path`; threads 0 leaves ONNX Runtime its default."""
    ort = onnx_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one pass at a time: the serve worker is one thread
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for an unreadable graph
        raise InputError(f"ONNX Runtime cannot load it: {str(e).splitlines()[0]}", path) from None


def padded_batch(
    vocab_size: int, pad_id: int, lengths: list[int], seed: int, segments: int = 2
) -> dict[str, Tensor]:
    """Random ids, rows of the given lengths padded to the longest; with two segments (token
    types), each row's second half is the second."""
    generator = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    ids = torch.randint(0, vocab_size, (B, T), generator=generator)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
    types = (torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * mask
    types = types * int(segments > 1)  # RoBERTa has one token type
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def largest_difference(model: nn.Module, ort_session, batch: dict[str, Tensor]) -> float:
    """max |ONNX Runtime - PyTorch| over the scores of real tokens (all of a classifier's)."""
    with torch.inference_mode():
        expected = model(*(batch[name] for name in INPUTS)).float()
    feeds = {name: batch[name].numpy() for name in INPUTS}
    got = torch.from_numpy(ort_session.run(None, feeds)[0])
    if got.shape != expected.shape:
        return float("inf")
    if expected.dim() == 3:  # per token: padding positions are nobody's scores
        keep = batch["attention_mask"].bool()
        got, expected = got[keep], expected[keep]
    return float((got - expected).abs().max())


def export(config: ExportConfig) -> Path:
    """Export, check against PyTorch, optionally quantize; a failure leaves no model.onnx."""
    onnx_runtime()  # before loading anything: one line when the packages are missing
    loaded = load_checkpoint(config.model)
    setup: TaskSetup | None = loaded.setup
    if setup is None:
        raise InputError(
            "not a fine-tuned model (no task.json): export takes a classify, tag or qa model",
            resolve_checkpoint(config.model),
        )
    source = resolve_checkpoint(config.model)
    if loaded.config.model_type == "xlnet":  # not a traceback from the ONNX tracer
        raise ConfigError(
            f"{source}: XLNet has no ONNX export here (its relative attention's strided shift "
            "does not trace); use muppets predict / evaluate on the checkpoint"
        )
    model = TaskLogits(loaded.model.float().eval(), setup.head).eval()
    tokenizer = loaded.tokenizer
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    traced, quantized = out / "model.fp32.tmp.onnx", out / "model.int8.tmp.onnx"
    length = min(setup.max_seq_length, loaded.config.max_sequence_length)
    segments = loaded.config.type_vocab_size
    example = padded_batch(tokenizer.vocab_size, tokenizer.pad_id, [min(6, length), 2], 0, segments)
    per_token = {0: "batch", 1: "sequence"}
    axes = {name: per_token for name in (*INPUTS, "logits")}
    if setup.head in ("classification", "regression"):
        axes["logits"] = {0: "batch"}
    try:
        with warnings.catch_warnings():  # the tracer's notes on Python ints it records as shapes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                tuple(example[name] for name in INPUTS),
                str(traced),
                input_names=list(INPUTS),
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        # Another shape than the traced one, with padding: a frozen shape or branch shows here
        lengths = [length, min(3, length), max(1, length // 2)]
        check = padded_batch(tokenizer.vocab_size, tokenizer.pad_id, lengths, 1, segments)
        difference = largest_difference(model, session(traced, 1), check)
        if not difference <= TOLERANCE:
            raise MuppetsError(
                f"{source}: the ONNX graph's scores differ from PyTorch's by {difference:.3g} "
                f"(> {TOLERANCE:g}); nothing exported"
            )
        record = {"format": "onnx", "quantize": config.quantize, "opset": OPSET}
        record.update(source=str(source), task=setup.task, head=setup.head)
        record["max_abs_difference_fp32"] = difference
        if config.quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.disable(logging.WARNING)  # its advice to pre-process, on every call
            try:
                quantize_dynamic(traced, quantized, weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            record["max_abs_difference_int8"] = largest_difference(
                model, session(quantized, 1), check
            )
            quantized.replace(out / ONNX_FILE)
        else:
            traced.replace(out / ONNX_FILE)
    finally:
        traced.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)
    save_task(out, setup)
    tokenizer.save(out)
    shutil.copyfile(source / "config.json", out / "config.json")
    (out / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    moved = ""
    if config.quantize == "int8":
        moved = f"; int8 scores move by up to {record['max_abs_difference_int8']:.3g}"
    print(
        f"export: {out / ONNX_FILE} ({setup.task}, {setup.head}, {config.quantize}); "
        f"ONNX Runtime matches PyTorch within {difference:.2g}{moved}",
        flush=True,
    )
    return out
