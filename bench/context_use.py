"""Does a pretrained BERT use word order yet? Held-out MLM loss with the order intact and shuffled,
and the shape of every attention head.

A model that has only learned which words occur in a sentence (a bag of its context) scores the
same loss when the tokens of each segment are shuffled; one that has learned where they occur gets
worse. The attention columns say why: entropy / log(n) is 1 for a head that spreads evenly over
the n tokens, and the neighbour share is the attention on tokens i - 1 and i + 1 (2 / n when it
is even, about 0.02 here).

    .venv/bin/python bench/context_use.py runs/bert-mini-final [runs/other ...]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from muppets.cli.args import load_toml
from muppets.models.layers import SelfAttention, pad
from muppets.recipes.pretrain import PretrainConfig, held_out_batches
from muppets.tasks.objectives import objective_for
from muppets.training.options import from_options
from muppets.training.pretrained import load_pretrained


def held_out(run: Path, instances: int):
    config = from_options(
        PretrainConfig, **{**load_toml(run / "pretrain.toml"), "eval_instances": instances}
    )
    model, _, t = load_pretrained(run)
    return model, config.objective, held_out_batches(config, t), (t.cls_id, t.sep_id)


def shuffle_segments(batch: dict, special: tuple[int, int], seed: int = 0) -> dict:
    """The batch with the tokens (and their labels) of every segment in a random order; [CLS],
    [SEP] and padding stay where they are."""
    rng = np.random.default_rng(seed)
    ids, labels = batch["input_ids"].clone(), batch["labels"].clone()
    for row in range(ids.shape[0]):
        n = int(batch["attention_mask"][row].sum())
        keep = np.isin(ids[row, :n].numpy(), special)
        cuts = np.flatnonzero(keep)  # [CLS] a... [SEP] b... [SEP]
        for start, end in zip(cuts[:-1] + 1, cuts[1:], strict=True):
            order = torch.from_numpy(rng.permutation(np.arange(start, end)))
            ids[row, start:end], labels[row, start:end] = ids[row, order], labels[row, order]
    return {**batch, "input_ids": ids, "labels": labels}


def mlm_loss(model, objective, batches) -> float:
    sums = [objective.metrics(model, batch) for batch in batches]
    return sum(m["mlm_loss_sum"] for m in sums) / sum(m["mlm_count"] for m in sums)


@torch.no_grad()
def attention_shape(model, batches) -> list[tuple[list[float], list[float]]]:
    """Per layer: (entropy / log n, neighbour share) of each head, averaged over real queries."""
    found = []

    def record(module: SelfAttention, inputs, _output):
        x, packing = inputs[0], inputs[1]
        B, T, nh = packing.batch_size, packing.seq_len, module.num_heads
        q, k, _ = pad(module.qkv(x), packing).view(B, T, 3, nh, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
        real = (
            torch.ones(B, 1, 1, T, dtype=torch.bool)
            if packing.key_mask is None
            else packing.key_mask
        )
        p = scores.masked_fill(~real, float("-inf")).softmax(-1)
        queries = real.squeeze(1).squeeze(1)  # (B, T)
        n = queries.sum(-1).float()  # (B,)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / n.log()[:, None, None]  # (B, nh, T)
        i = torch.arange(T - 1)
        neighbours = torch.zeros_like(entropy)
        neighbours[..., 1:] += p[..., i + 1, i]  # attention of token i + 1 on token i
        neighbours[..., :-1] += p[..., i, i + 1]

        def mean(v):  # (B, nh, T) -> (nh,) over real queries
            w = queries[:, None, :].float()
            return ((v * w).sum((0, 2)) / w.sum((0, 2))).tolist()

        found.append((mean(entropy), mean(neighbours)))

    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    hooks = [m.register_forward_hook(record) for m in layers]
    batch = batches[0]
    model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    for h in hooks:
        h.remove()
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--instances", type=int, default=1024, help="held-out instances")
    args = parser.parse_args()
    print("| run | MLM loss | word order shuffled | difference |")
    print("| --- | --- | --- | --- |")
    shapes = {}
    for run in args.runs:
        model, name, batches, special = held_out(run, args.instances)
        objective = objective_for(name)
        intact = mlm_loss(model, objective, batches)
        shuffled = mlm_loss(model, objective, [shuffle_segments(b, special) for b in batches])
        print(f"| {run.name} | {intact:.3f} | {shuffled:.3f} | {shuffled - intact:+.3f} |")
        shapes[run.name] = attention_shape(model, batches)
    print("\n| run | layer | entropy / log n, per head | neighbour share, per head |")
    print("| --- | --- | --- | --- |")
    for name, layers in shapes.items():
        for i, (entropy, neighbours) in enumerate(layers):
            e = " ".join(f"{v:.2f}" for v in entropy)
            s = " ".join(f"{v:.3f}" for v in neighbours)
            print(f"| {name} | {i + 1} | {e} | {s} |")


if __name__ == "__main__":
    main()
