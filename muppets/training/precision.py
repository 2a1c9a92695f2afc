"""The arithmetic a run uses, chosen per machine at run time: fp32, or bf16/fp16 mixed precision.

Mixed precision means fp32 master weights, gradients and optimizer state, with matmuls (and the
other ops torch's autocast lists) in the reduced type; checkpoints stay fp32 and load anywhere.
bf16 pays only where the hardware computes it: on a CPU with AMX (amx_bf16) or avx512_bf16 a
matmul runs ~6x faster than fp32 (issue 13: 978 vs 155 GFLOP/s on one Xeon core); on a CPU without
them torch emulates it at ~1 GFLOP/s, ~100x slower. So "auto" asks the hardware, never the project.

    bf16_supported(device) -> bool          CPU: amx_bf16 or avx512_bf16; CUDA: torch says so
    resolve_precision(name, device, force)  "auto" | "fp32" | "bf16" | "fp16" -> the one to use,
                                            or a one-line ConfigError for a choice that cannot pay
    autocast(precision, device)             the context to run forward passes (and losses) in
    describe(precision, device)             the line a run prints once, e.g.
                                            "precision: bf16 mixed (AMX) on cpu"

fp16 needs a GradScaler around backward (the loop's job); bf16 has fp32's exponent and does not.
"""

from __future__ import annotations

import contextlib
import os
import platform
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from muppets.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FORCE_FLAG = "--force-precision"  # the CLI flag that passes force=True
# Where the CPU's model and flags are read: CPUINFO when set, else $MUPPETS_CPUINFO, else
# /proc/cpuinfo (Linux; elsewhere torch's own CPU probe answers). The tests point the variable at
# a CPU without bf16, so that "auto" gives their pinned fp32 numbers on any machine.
CPUINFO: Path | None = None
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cpu_info() -> tuple[str, frozenset[str] | None]:
    """(model name, feature flags of the first CPU); flags None where /proc/cpuinfo says nothing."""
    model, flags = None, None
    try:
        path = CPUINFO or Path(os.environ.get("MUPPETS_CPUINFO", "/proc/cpuinfo"))
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:  # the first processor's block is enough: all cores are alike
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = frozenset(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model or platform.processor() or "unknown CPU", flags


def _torch_probe(name: str) -> bool:
    """torch.cpu's private cpuinfo probes (present in torch 2.x); False if this torch lacks one."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def _bf16_hardware(device: torch.device) -> str | None:
    """What computes bf16 on this device ("AMX", "avx512_bf16", the GPU's name), None if nothing."""
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.cuda.get_device_name(device)
        return None
    if device.type != "cpu":
        return None  # mps, xla, ...: not measured here, so not chosen by "auto"
    _, flags = _cpu_info()
    if flags is None:
        amx = _torch_probe("_is_amx_tile_supported")
        avx512 = _torch_probe("_is_avx512_bf16_supported")
    else:
        amx, avx512 = "amx_bf16" in flags, "avx512_bf16" in flags
    return "AMX" if amx else "avx512_bf16" if avx512 else None


def bf16_supported(device: torch.device | str) -> bool:
    """True where bf16 arithmetic runs in hardware: a CPU with AMX or avx512_bf16, a bf16 GPU."""
    return _bf16_hardware(torch.device(device)) is not None


def resolve_precision(name: str, device: torch.device | str, force: bool = False) -> str:
    """ "auto" -> "bf16" where bf16_supported, else "fp32"; an explicit choice is checked.

    bf16 without the hardware is refused (it would run ~100x slower) unless force; fp16 on the CPU
    is refused always (torch's CPU fp16 kernels are slower than fp32 and need a GradScaler).
    """
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name!r}: must be one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if name == "bf16" and not force and not bf16_supported(device):
        what = f"this CPU ({_cpu_info()[0]}: no AMX or avx512_bf16)"
        raise ConfigError(
            f"--precision bf16: {what if device.type == 'cpu' else device} has no bf16 hardware, "
            f"so it would run ~100x slower than fp32; use --precision auto or fp32, "
            f"or add {FORCE_FLAG} to run it anyway"
        )
    if name == "fp16" and device.type == "cpu":
        raise ConfigError(
            "--precision fp16: runs on a GPU only; on the CPU use --precision auto, fp32 or bf16"
        )
    return name


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """torch.autocast in bf16/fp16 on the device's type; a context that does nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ValueError(
            f"autocast needs a resolved precision (fp32, bf16, fp16), not {precision!r}"
        )
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def describe(precision: str, device: torch.device | str) -> str:
    """One line for the run's log: the precision, the device and the hardware behind the choice."""
    device = torch.device(device)
    hardware = _bf16_hardware(device)
    if device.type == "cpu":
        missing = f"no bf16 hardware: {_cpu_info()[0]}"
        if precision == "fp32":
            if hardware is None:
                return f"precision: fp32 on cpu ({missing})"
            return f"precision: fp32 on cpu ({hardware} present: --precision auto would use bf16)"
        if hardware is None:
            return f"precision: {precision} mixed on cpu (forced; {missing}, ~100x slower)"
        return f"precision: {precision} mixed ({hardware}) on cpu"
    cuda = device.type == "cuda" and torch.cuda.is_available()
    name = torch.cuda.get_device_name(device) if cuda else None
    where = f"on {device.type}" + (f" ({name})" if name else "")
    return f"precision: {precision}{'' if precision == 'fp32' else ' mixed'} {where}"
