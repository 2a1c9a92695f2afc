"""Dropout whose mask costs a quarter of a random draw per element on CPU.

Why: on a CPU that is not Intel's, torch's bernoulli_ (what nn.Dropout draws its mask with)
takes its portable path, a 64-bit draw and a double conversion per element (ATen
DistributionKernels.cpp, bernoulli_scalar_kernel: the MKL path is for Intel only), about a tenth
of an XLNet / Transformer-XL training step here, where attention probabilities are dropped too.
Here one 64-bit draw of torch's own generator (so torch.manual_seed and a checkpoint's saved RNG
state still decide every mask) gives four 16-bit uniforms; an element is kept when its uniform is
at or above round(p * 2^16) / 2^16, i.e. dropped with probability p to within 2^-17, and kept
ones are scaled by 1 / (1 - that probability), so the expectation is exactly the input's.

Elsewhere (CUDA: a fused kernel), at p = 0 or 1 and in eval mode: F.dropout, which returns the
input itself (no copy, no draw) when p is 0 or the module is not training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 1 << 16  # 16-bit uniforms: four per 64-bit draw


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """x with each element zeroed with probability p and the rest scaled to keep the mean."""
    if not training or not 0.0 < p < 1.0 or x.device.type != "cpu" or x.numel() == 0:
        return F.dropout(x, p, training)
    dropped = round(p * LEVELS)  # uniforms below -2^15 + dropped are dropped
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    uniforms = draws.view(torch.int16)[:n].view(x.shape)  # (..., ) in [-2^15, 2^15)
    # keep = uniforms >= threshold, in float arithmetic (exact on these integers): bool tensors
    # cost several times more per element here than float ones.
    threshold = dropped - LEVELS // 2
    noise = uniforms.to(torch.float32).sub_(threshold - 1).clamp_(0.0, 1.0)  # 1 = kept
    noise = noise.mul_(LEVELS / (LEVELS - dropped)).to(x.dtype)
    return x * noise


class Dropout(nn.Dropout):
    """nn.Dropout with `dropout` as its forward. A subclass, not a composition, so that what
    finds dropout by type (recipes/finetune/encoder.py's set_dropout: isinstance(m, nn.Dropout))
    finds this one too."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
