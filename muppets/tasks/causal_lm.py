"""Causal LM training with memories carried from one segment to the next (Transformer-XL).

The loop (training/loop.py) calls `objective(model, batch)` on stateless micro-batches; here the
state lives in a `SegmentMemory` that the model wrapper reads and writes and the batch source
saves, so the loop needs nothing new:
  - `RowChunks` cuts each segment's B rows into k micro-batches of B / k rows (the reference's
    batch_chunk, train.py), tagged with their chunk so each keeps its own memory;
  - `TransfoXLLoss` runs the model on a chunk with that chunk's memory and stores the new one;
    segment 0 of a pass (`new_stream`) starts without memory (train.py resets mems each epoch);
  - `RowChunks.state_dict()` holds the data position and the memories (raw bytes, base64), so
    a resumed run continues with the same memories: bitwise the uninterrupted run. Held-out
    passes use memories of their own, never saved.
"""

from __future__ import annotations

import base64

import torch
from torch import Tensor, nn

from muppets.data.lm_streams import IGNORE_INDEX, SegmentBatches
from muppets.models.transfo_xl import TransfoXLLMHeadModel


class SegmentMemory:
    """Per-layer memories by key: ("train", chunk) or ("eval", chunk)."""

    def __init__(self):
        self.mems: dict[tuple[str, int], list[Tensor]] = {}

    def get(self, key: tuple[str, int], device) -> list[Tensor] | None:
        mems = self.mems.get(key)
        return None if mems is None else [m.to(device) for m in mems]

    def put(self, key: tuple[str, int], mems: list[Tensor] | None) -> None:
        if mems is None:
            self.mems.pop(key, None)
        else:
            self.mems[key] = mems

    def reset(self, key: tuple[str, int]) -> None:
        self.mems.pop(key, None)

    def state_dict(self) -> dict[str, dict]:
        """The training memories as JSON data: {chunk: {dtype, shape, bytes (base64)}}."""
        state = {}
        for (kind, chunk), mems in sorted(self.mems.items()):
            if kind != "train":
                continue
            stacked = torch.stack(mems).detach().cpu().contiguous()  # (L, b, M, H)
            raw = stacked.view(torch.uint8).numpy().tobytes()
            state[str(chunk)] = {
                "dtype": str(stacked.dtype).removeprefix("torch."),
                "shape": list(stacked.shape),
                "bytes": base64.b64encode(raw).decode("ascii"),
            }
        return state

    def load_state_dict(self, state: dict[str, dict] | None) -> None:
        self.mems = {}
        for chunk, entry in (state or {}).items():
            raw = bytearray(base64.b64decode(entry["bytes"]))
            dtype = getattr(torch, entry["dtype"])
            stacked = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).view(entry["shape"])
            self.mems[("train", int(chunk))] = list(stacked.unbind(0))


class RowChunks:
    """Micro-batches of a `SegmentBatches`: each segment's rows in `chunks` equal parts, in
    order; every micro-batch gets `chunk` (its part). Resumable with its memories."""

    def __init__(
        self, segments: SegmentBatches, chunks: int, memory: SegmentMemory, rows: int | None = None
    ):
        # rows: per process, for a source of another kind (XLNet's XLNetBatches); same contract
        rows = len(segments.segments.rows) if rows is None else rows
        if chunks < 1 or rows % chunks:
            raise ValueError(f"{rows} rows per process cannot be cut into {chunks} micro-batches")
        self.segments, self.chunks, self.memory = segments, chunks, memory
        self.pending: list[dict[str, Tensor]] = []

    def __iter__(self) -> RowChunks:
        return self

    def __next__(self) -> dict[str, Tensor]:
        if not self.pending:
            batch = next(self.segments)
            self.pending = split_rows(batch, self.chunks)
        return self.pending.pop(0)

    def state_dict(self) -> dict:
        # The loop saves between optimizer steps, where no chunk of a segment is pending.
        assert not self.pending, "saved inside a segment"
        return {**self.segments.state_dict(), "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.segments.load_state_dict(state)
        self.memory.load_state_dict(state.get("memory"))
        self.pending = []


def split_rows(batch: dict[str, Tensor], chunks: int) -> list[dict[str, Tensor]]:
    """A segment's (B, ...) tensors as `chunks` micro-batches of B / chunks rows, tagged; a
    tensor without a row dimension (new_stream) goes to every chunk."""
    B = batch["input_ids"].shape[0]
    size = B // chunks
    chunked = []
    for c in range(chunks):
        part = {
            k: v[c * size : (c + 1) * size] if v.dim() and v.shape[0] == B else v
            for k, v in batch.items()
        }
        chunked.append({**part, "chunk": torch.tensor(c)})
    return chunked


class TransfoXLLoss(nn.Module):
    """TransfoXLLMHeadModel with the summed NLL as its forward, its memories kept in `memory`.
    The model's sub-modules are shared under the same names, so the state dict is the model's
    (as BiLMLoss does for ELMo)."""

    def __init__(self, model: TransfoXLLMHeadModel, memory: SegmentMemory | None = None):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.bias = model.bias
        self.__dict__["lm"] = model  # not registered: its parameters are the ones above
        self.__dict__["memory"] = memory if memory is not None else SegmentMemory()

    def forward(self, input_ids: Tensor, labels: Tensor, new_stream: Tensor, chunk: Tensor):
        """(NLL summed over the predicted tokens, their count)."""
        key = ("train" if self.training else "eval", int(chunk))
        if bool(new_stream):
            self.memory.reset(key)
        mems = self.memory.get(key, input_ids.device)
        out = self.lm(input_ids, mems, labels, return_logits=False, sum_only=True)
        self.memory.put(key, out.mems)
        return out.loss, int(labels.ne(IGNORE_INDEX).sum())


class CausalLMObjective:
    """One component, "lm": next-token NLL summed over the micro-batch's labels."""

    def _loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        chunk = batch.get("chunk", torch.tensor(0))
        return model(batch["input_ids"], batch["labels"], batch["new_stream"], chunk)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"lm": self._loss(model, batch)[0]}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        return {"lm": int(batch["labels"].ne(IGNORE_INDEX).sum())}

    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        loss, n = self._loss(model, batch)
        return {"lm_loss_sum": float(loss), "lm_count": n}
