"""Pretraining speed: muppets vs transformers' BertForMaskedLM on the same work, in one process.

Both models get the same config, the same initial weights, the same batches and the same
optimizer (AdamW, fused); a step is forward + backward + clip + optimizer step. Reported:
real (non-padding) tokens per second for each, the ratio, and muppets' model FLOP/s against the
fp32 matmul peak measured here. Run with tcmalloc preloaded, as `make` does:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python bench/pretrain_throughput.py --model bert-mini
"""

from __future__ import annotations

import argparse
import time

import torch

from muppets.models.hf import bert_state_dict_to_hf, config_to_hf
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tasks.objectives import objective_for
from muppets.training.optim import build_optimizer


def make_batches(n, batch_size, vocab_size, lengths, seed=0):
    """Random ids with [CLS]/[SEP] ends, right padding, 15% of real non-special tokens masked."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        if lengths == "full":
            lens = torch.full((batch_size,), 128)
        else:
            lens = torch.randint(16, 129, (batch_size,), generator=g)
        T = int(lens.max())
        ids = torch.randint(5, vocab_size, (batch_size, T), generator=g)
        mask = torch.arange(T)[None, :] < lens[:, None]  # (B, T)
        ids[:, 0], ids[torch.arange(batch_size), lens - 1] = 2, 3
        ids[~mask] = 0
        chosen = (torch.rand(batch_size, T, generator=g) < 0.15) & mask
        chosen[:, 0] = False
        chosen[torch.arange(batch_size), lens - 1] = False
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        ids = torch.where(chosen, torch.full_like(ids, 4), ids)
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": mask.long(),
                "token_type_ids": torch.zeros_like(ids),
                "labels": labels,
            }
        )
    return batches


def ours_step(model, optimizer, objective):
    def step(batch):
        sums = objective(model, batch)
        (sums["mlm"] / objective.count_targets(batch)["mlm"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_step(model, optimizer):
    def step(batch):
        model(**batch).loss.backward()  # mean over masked tokens, as ours
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tokens_per_second(step, batches, rounds):
    step(batches[0])  # warm-up: allocator, kernels
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        seconds = time.perf_counter() - start
        best = max(best, sum(int(b["attention_mask"].sum()) for b in batches) / seconds)
    return best


def matmul_peak() -> float:
    """fp32 GFLOP/s of a 1024^3 matmul, the best of 10."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = 0.0
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
    return best


def training_flops(config, batches) -> float:
    """Model FLOPs of one pass over the batches (3x forward: forward + backward), real tokens."""
    H, I, L, V = (
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.vocab_size,
    )
    total = 0.0
    for b in batches:
        lens = b["attention_mask"].sum(1).double()
        tokens = float(lens.sum())
        dense = tokens * L * 2 * (4 * H * H + 2 * H * I)  # QKV + output + feed-forward
        attention = float((lens**2).sum()) * L * 2 * 2 * H  # scores + weighted sum
        masked = float((b["labels"] != -100).sum())
        head = masked * 2 * (H * H + H * V)  # transform + tied decoder at masked positions
        total += 3 * (dense + attention + head)
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="bert-mini")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    config = preset_config(args.model)
    torch.manual_seed(0)
    ours = build_pretraining_model(config, with_pair_head=False).train()
    hf_config = transformers.BertConfig(
        **config_to_hf(config, with_pair_head=False), attn_implementation="sdpa"
    )
    hf = transformers.BertForMaskedLM(hf_config).train()
    assert hf.config._attn_implementation == "sdpa"
    state = bert_state_dict_to_hf(ours.state_dict(), config)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # BertForMaskedLM has no pooler; its decoder weight and bias are tied, not stored
    assert all(k.startswith("bert.pooler.") for k in unexpected), unexpected
    assert all(k.startswith("cls.predictions.decoder.") for k in missing), missing
    hf.tie_weights()
    for module in (ours, hf):  # dropout draws differ between the two; time without it
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    check = make_batches(1, 4, config.vocab_size, "16..128", seed=1)[0]
    with torch.no_grad():  # the same model: the same loss on the same batch
        ours_loss = objective_for("mlm")(ours, check)["mlm"] / (check["labels"] != -100).sum()
        assert torch.allclose(ours_loss, hf(**check).loss, rtol=1e-3), (ours_loss, hf(**check).loss)
    steps = {
        "muppets": ours_step(ours, build_optimizer(ours), objective_for("mlm")),
        "transformers": hf_step(hf, build_optimizer(hf)),
    }
    peak = matmul_peak()
    print(
        f"{args.model}, batch {args.batch_size}, {args.threads} threads, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; "
        f"fp32 matmul peak {peak:.0f} GFLOP/s"
    )
    print("| lengths | transformers tok/s | muppets tok/s | ratio | muppets GFLOP/s | % of peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    for lengths in ("16..128", "full"):
        batches = make_batches(args.batches, args.batch_size, config.vocab_size, lengths)
        speed = {}
        for name in ("transformers", "muppets") * args.rounds:  # interleaved against drift
            speed[name] = max(speed.get(name, 0.0), tokens_per_second(steps[name], batches, 1))
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        gflops = training_flops(config, batches) / (tokens / speed["muppets"]) / 1e9
        print(
            f"| {lengths} | {speed['transformers']:.0f} | {speed['muppets']:.0f} | "
            f"{speed['muppets'] / speed['transformers']:.2f}x | {gflops:.1f} | "
            f"{100 * gflops / peak:.0f}% |"
        )


if __name__ == "__main__":
    main()
