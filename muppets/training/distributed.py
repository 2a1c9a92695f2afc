"""Process-group setup for `torchrun`, and the few collectives the loop needs.

One process is the normal case, not a special one: with WORLD_SIZE unset or 1 every function
here is a no-op (or the identity), so the loop calls them unconditionally. Under
`torchrun --nproc_per_node N` we use gloo on CPU and nccl on CUDA, one GPU per local rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from muppets.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group that `torchrun` describes in RANK, WORLD_SIZE and LOCAL_RANK.

    `device`: "cpu" or "cuda"; by default CUDA when available. Each CUDA process takes the GPU
    numbered by its LOCAL_RANK. Call once, before building rank-aware data sources.
    """
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device(kind)
    if world_size > 1 and not dist.is_initialized():
        # env:// reads MASTER_ADDR and MASTER_PORT, which torchrun sets.
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo", init_method="env://")
    return DistInfo(rank, world_size, local_rank, where)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place; returns it. On CUDA under nccl it must be on GPU."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list:
    """Every rank's `obj` (JSON-like data: positions, RNG states), in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` when there are several processes, else `model`.

    DDP broadcasts rank 0's parameters at construction, so every rank starts from the same
    weights. It averages gradients across ranks in backward; the loop scales the loss to match.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call at the end of a `torchrun` script). The barrier first: a
    rank that tears gloo down while a peer (rank 0 still writing its checkpoint and summary)
    holds the connection can abort with "terminate called without an active exception"."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
