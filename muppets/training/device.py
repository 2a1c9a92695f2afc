"""Where and how a run computes: the device named by a config's `device` option, torch's CPU
threads for the run, and the start every stream-training recipe makes (distributed set-up and the
run's precision, decided once)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from muppets.training import distributed as dist
from muppets.training.state import recorded_precision


def pick_device(name: str) -> torch.device:
    """ "auto": CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads set to `threads` for the block (0: left as they are), then restored."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def start_run(config: Any) -> tuple[Any, Any]:
    """(distributed info, the config with its precision resolved): the process group set up on
    the config's device, and the arithmetic decided once for the run and printed by rank 0; a
    resumed run keeps its own precision unless told (training/options.Precision.start)."""
    info = dist.init_distributed(None if config.device == "auto" else config.device)
    run = config.run
    recorded = recorded_precision(config.out, run.resume_from) if run.resume else None
    arithmetic = config.arithmetic.start(info.device, recorded, show=dist.rank() == 0)
    return info, dataclasses.replace(config, arithmetic=arithmetic)
