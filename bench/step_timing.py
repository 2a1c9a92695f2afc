"""What the pretraining-step benches share: a timed optimizer step, tokens per second, and the
interleaved comparison table (ours vs transformers on the same batches)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from muppets.training.optim import build_optimizer


def timed_step(loss_fn: Callable, model: torch.nn.Module) -> Callable:
    """One optimizer step on a batch: backward, clip at 1.0, fused AdamW, zero grads."""
    optimizer = build_optimizer(model)

    def step(batch):
        loss_fn(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tokens_per_second(
    step: Callable, batches: list[dict], clock: Callable[[], float] = time.perf_counter
) -> float:
    """Real (non-padding) tokens per second over the batches. clock: time.perf_counter (wall)
    or time.process_time (this process's CPU time: on a shared machine, the time it ran)."""
    start = clock()
    for batch in batches:
        step(batch)
    return sum(int(b["attention_mask"].sum()) for b in batches) / (clock() - start)


def compare(
    steps: dict[str, Callable],
    batches_for: Callable,
    rounds: int,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Print a table row per length setting: the best of `rounds` interleaved rounds of each."""
    print("| lengths | transformers tok/s | muppets tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    for lengths in ("16..128", "full"):
        batches = batches_for(lengths)
        for step in steps.values():
            step(batches[0])  # warm-up: allocator, kernels
        speed: dict[str, float] = {}
        for name in ("transformers", "muppets") * rounds:  # interleaved against drift
            speed[name] = max(speed.get(name, 0.0), tokens_per_second(steps[name], batches, clock))
        ratio = speed["muppets"] / speed["transformers"]
        print(
            f"| {lengths} | {speed['transformers']:.0f} | {speed['muppets']:.0f} | {ratio:.2f}x |",
            flush=True,
        )


def lengths_of(batch_size: int, lengths: str, g: torch.Generator) -> torch.Tensor:
    """(B,) sequence lengths: uniform in 16..128, or all 128."""
    if lengths == "full":
        return torch.full((batch_size,), 128)
    return torch.randint(16, 129, (batch_size,), generator=g)
