"""A `muppets export` directory served through ONNX Runtime: the task's route only (classify, tag
or qa; no embed or fill-mask: the graph ends at the task's scores), with the same featurization,
batching and decoding as the PyTorch model (serve/models.py TaskRoutes), so the answers are
predict's wherever the scores are (an fp32 export: within 1e-4, checked when it was written).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from muppets.recipes.export import EXPORT_FILE, INPUTS, ONNX_FILE, session
from muppets.tasks.setup import load_task
from muppets.training.pretrained import load_any_tokenizer  # what every checkpoint loads with

# Padded tokens in one ONNX Runtime pass on a CPU (it computes the padding): bert-tiny QA on
# XQuAD took 4.6-4.7 ms of CPU a question at 512 and 1,024, 4.6-5.5 at 2,048, 5.5 at 256
# (bench/serve_qa_cost.py --export, two runs on a shared machine; bench/RESULTS.md).
ONNX_FORWARD_TOKENS = 512


class OnnxTaskModel:
    """The exported graph: (B, T) input arrays -> the task's scores as a float32 array."""

    device = torch.device("cpu")
    forward_tokens = ONNX_FORWARD_TOKENS

    def __init__(self, path: Path, threads: int):
        self.session = session(path, threads)

    def scores(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """(B, T) int64 arrays -> the graph's float32 scores; no torch call on the way."""
        feeds = {name: np.ascontiguousarray(batch[name]) for name in INPUTS}
        return self.session.run(None, feeds)[0]


def is_export(directory: Path) -> bool:
    return (directory / ONNX_FILE).is_file()


def load_export(directory: Path):
    """(model, setup, tokenizer, info) of an export directory; ONNX Runtime gets torch's thread
    count (serve --threads)."""
    setup = load_task(directory)
    tokenizer = load_any_tokenizer(directory)
    model = OnnxTaskModel(directory / ONNX_FILE, torch.get_num_threads())
    record = {}
    if (directory / EXPORT_FILE).is_file():
        record = json.loads((directory / EXPORT_FILE).read_text(encoding="utf-8"))
    info = {"backend": "onnxruntime", "quantize": record.get("quantize", "none")}
    return model, setup, tokenizer, info
