"""Where a run computes: the device named by a config's `device` option."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """ "auto": CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
