"""How fast this machine trains the quickstart's BERT, measured before the lanes start: the unit
of the comparison's estimates (plan.COST), known to both lanes at once (the BERT pretraining's
own throughput comes too late for the lane that runs beside it)."""

from __future__ import annotations

import time

import torch

from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tasks.objectives import objective_for
from muppets.training.optim import build_optimizer
from muppets.training.precision import autocast

# The first pretraining phase's shape (config.BERT_PHASES): 64 instances of 32 tokens.
BATCH, LENGTH, MASKED = 64, 32, 0.15


def synthetic_batch(vocab_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random ids between [CLS] and [SEP], MASKED of the inner tokens masked, one NSP label."""
    ids = torch.randint(5, vocab_size, (BATCH, LENGTH), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3
    chosen = torch.rand(BATCH, LENGTH, generator=generator) < MASKED
    chosen[:, 0] = chosen[:, -1] = False
    return {
        "input_ids": torch.where(chosen, torch.full_like(ids, 4), ids),
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.where(chosen, ids, torch.full_like(ids, -100)),
        "next_sentence_label": torch.randint(0, 2, (BATCH,), generator=generator),
    }


def bert_tokens_per_second(
    model: str, vocab_size: int, precision: str = "fp32", seconds: float = 2.0
) -> float:
    """Tokens per second of MLM + NSP training steps (forward, backward, AdamW) of the preset on
    this process's threads, in the run's resolved `precision` (on the CPU, as the quickstart's
    stages): the best of the steps after two warm-up steps, over `seconds`."""
    torch.manual_seed(0)
    network = build_pretraining_model(preset_config(model, vocab_size=vocab_size))
    optimizer = build_optimizer(network, learning_rate=1e-4)
    objective = objective_for("mlm+nsp")
    batch = synthetic_batch(vocab_size, torch.Generator().manual_seed(0))
    counts = objective.count_targets(batch)

    def step():
        with autocast(precision, "cpu"):
            sums = objective(network, batch)
        sum(sums[name] / max(counts[name], 1) for name in sums).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(), step()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return BATCH * LENGTH / best
