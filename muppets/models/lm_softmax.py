"""The summed full-softmax NLL of a language model, its gradient computed in the forward, by blocks.

    softmax_nll_sum(h, weight, bias, targets) = sum_m -log softmax(h_m W^T + b)[y_m]
        h (M, P) states, weight (V, P), bias (V,), targets (M,) in [0, V) -> scalar

Why: F.cross_entropy(F.linear(h, W, b), y, reduction="sum") makes about five passes over M x V
floats (logits, log-softmax, and in backward a one-hot gradient and a second exp pass), each a
fresh allocation that, at this size, glibc serves with new pages (page faults on every step).
The gradient of the summed NLL with respect to the logits is softmax - one_hot, known as soon as
the softmax is. So each block of R rows does logits -> softmax in place (one vectorised exp pass)
-> subtract 1 at the target -> its rows of dh and its share of dW and db, in cache-sized buffers
reused from block to block; backward only scales the saved gradients by the incoming one.

Same numbers as the plain path up to float rounding (tests/test_elmo.py pins 1e-6). Used while
training in fp32 (no grad, or autocast: the plain path, where nothing is saved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_ELEMENTS = 2**21  # floats per (R, V) buffer: 8 MiB, under glibc's largest mmap threshold
TINY = 1e-30  # below this, -log(p) loses digits to subnormals: recompute with log_softmax


class _SoftmaxNllSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor) -> Tensor:
        M, V = h.shape[0], weight.shape[0]
        R = min(M, max(32, BLOCK_ELEMENTS // V))
        probs = h.new_empty(R, V)  # (R, V) logits, then probabilities, then their gradient
        d_h = torch.empty_like(h)  # (M, P)
        d_weight = torch.empty_like(weight)  # (V, P): the first block writes it, the rest add
        d_bias = torch.empty_like(bias)  # (V,)
        loss = h.new_zeros(())
        for start in range(0, M, R):
            h_block, y = h[start : start + R], targets[start : start + R]  # (r, P), (r,)
            r = h_block.shape[0]
            p = torch.addmm(bias, h_block, weight.t(), out=probs[:r])  # (r, V) logits
            torch.softmax(p, dim=1, out=p)
            p_y = p.gather(1, y[:, None]).squeeze(1)  # (r,) target probabilities
            nll = -torch.log(p_y)
            tiny = p_y < TINY
            if tiny.any():  # those rows' log-softmax again, from their logits (rare)
                rows = tiny.nonzero().squeeze(1)
                logits = torch.addmm(bias, h_block[rows], weight.t())
                nll[rows] = -logits.log_softmax(dim=1).gather(1, y[rows, None]).squeeze(1)
            loss += nll.sum()
            p.scatter_add_(1, y[:, None], p.new_full((r, 1), -1.0))  # softmax - one_hot
            torch.mm(p, weight, out=d_h[start : start + r])
            if start == 0:
                torch.mm(p.t(), h_block, out=d_weight)
                torch.sum(p, dim=0, out=d_bias)
            else:
                d_weight.addmm_(p.t(), h_block)
                d_bias += p.sum(dim=0)
        ctx.save_for_backward(d_h, d_weight, d_bias)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        d_h, d_weight, d_bias = ctx.saved_tensors
        return d_h * grad, d_weight * grad, d_bias * grad, None


def softmax_nll_sum(h: Tensor, weight: Tensor, bias: Tensor, targets: Tensor) -> Tensor:
    """sum_m -log softmax(h_m W^T + b)[y_m]: the blocked path while training in fp32, else
    F.cross_entropy (no grad wanted, or autocast choosing its own dtypes)."""
    wants_grad = torch.is_grad_enabled() and (
        h.requires_grad or weight.requires_grad or bias.requires_grad
    )
    plain = h.shape[0] == 0 or h.dtype != torch.float32
    if not wants_grad or torch.is_autocast_enabled(h.device.type) or plain:
        return F.cross_entropy(F.linear(h, weight, bias), targets, reduction="sum")
    return _SoftmaxNllSum.apply(h, weight, bias, targets)
