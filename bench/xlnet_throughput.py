"""XLNet pretraining speed: muppets' XLNetLMHeadModel step vs transformers' XLNetLMHeadModel.

A pretraining-style step as zihangdai/xlnet's train_gpu.py runs it: a segment of seq_len tokens
(two segments and <cls>, token_type_ids), memories of mem_len positions per layer from the
previous segment (here fixed random tensors, the same for both sides), a perm_mask from a random
factorisation order over num_predict targets (about seq_len / 6, K = 6), target_mapping one-hot
rows, the cross-entropy of the targets (ours as pretrain-xlnet computes it, tasks/permutation_lm.py
target_nll_sum), backward, clip at 1.0, fused AdamW (bench/step_timing.py).
Same initial weights (ours converted with models/hf_xlnet.py; checked: the same loss in eval
mode), same batches, dropout 0.1 on both. Rounds are interleaved in one process (the machine is
shared with other jobs), step by step in turns; the table gives the best round of each, by wall
time and by the process's CPU time (with one thread, the time it computed rather than waited for
a core). Run:

    .venv/bin/python bench/xlnet_throughput.py --model xlnet-mini --threads 1
    .venv/bin/python bench/xlnet_throughput.py --model xlnet-mini --threads 1 \
        --seq-len 512 --mem-len 384 --num-predict 85 --batch-size 2   # XLNet's proportions
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from step_timing import timed_step

from muppets.models.hf_xlnet import config_to_hf, state_dict_to_hf
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tasks.permutation_lm import target_nll_sum

SEP, CLS = 4, 3  # XLNet's <sep> and <cls> ids


def make_batches(n, batch_size, seq_len, num_predict, config, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, P = batch_size, seq_len, num_predict
    batches = []
    for _ in range(n):
        ids = torch.randint(10, config.vocab_size, (B, T), generator=g)
        half = T // 2
        ids[:, half - 1], ids[:, T - 2], ids[:, T - 1] = SEP, SEP, CLS
        segments = torch.zeros(B, T, dtype=torch.long)
        segments[:, half:] = 1
        segments[:, T - 1] = 2
        # P targets per row in a random order; the others are context everyone sees (rank -1)
        targets = torch.stack([torch.randperm(T - 1, generator=g)[:P] for _ in range(B)])
        rank = torch.full((B, T), -1)
        rank.scatter_(1, targets, torch.stack([torch.randperm(P, generator=g) for _ in range(B)]))
        is_target = rank >= 0
        perm_mask = (is_target[:, None, :] & (rank[:, None, :] >= rank[:, :, None])).float()
        mapping = torch.zeros(B, P, T)
        mapping.scatter_(2, targets[..., None], 1.0)
        mems = [torch.randn(B, config.mem_len, config.d_model, generator=g) * 0.5]
        batches.append(
            {
                "input_ids": ids,
                "token_type_ids": segments,
                "perm_mask": perm_mask,
                "target_mapping": mapping,
                "labels": ids.gather(1, targets),
                "mems": mems * config.n_layer,
            }
        )
    return batches


def ours_loss(model, batch):
    """As pretrain-xlnet's objective computes it (tasks/permutation_lm.py): the query stream at
    the targets, then the tied head's cross-entropy there."""
    out = model.encoder.run(
        batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        mems=batch["mems"],
        perm_mask=batch["perm_mask"],
        target_mapping=batch["target_mapping"],
        use_mems=True,
        tied_head=True,
    )
    return target_nll_sum(model, out.hidden, batch["labels"]) / batch["labels"].numel()


def hf_loss(model, batch):
    out = model(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        mems=[m.transpose(0, 1) for m in batch["mems"]],  # transformers': (M, B, H)
        perm_mask=batch["perm_mask"],
        target_mapping=batch["target_mapping"],
        use_mems=True,
    )
    return F.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten())


def hf_model(ours, config):
    import transformers

    theirs = transformers.XLNetLMHeadModel(transformers.XLNetConfig(**config_to_hf(config)))
    missing, unexpected = theirs.load_state_dict(
        state_dict_to_hf(ours.state_dict(), config), strict=False
    )
    assert not unexpected and set(missing) <= {"lm_loss.weight"}, (missing, unexpected)
    return theirs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="xlnet-mini")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--mem-len", type=int, default=64)
    parser.add_argument("--num-predict", type=int, default=21)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    half = args.seq_len // 2
    config = preset_config(args.model, vocab_size=32000, mem_len=args.mem_len, reuse_len=half)
    torch.manual_seed(0)
    ours = build_pretraining_model(config)
    theirs = hf_model(ours, config)
    check = make_batches(1, 2, args.seq_len, args.num_predict, config, seed=1)[0]
    with torch.no_grad():  # the same weights: the same loss
        a, b = ours_loss(ours.eval(), check), hf_loss(theirs.eval(), check)
        assert torch.allclose(a, b, rtol=1e-4), (a, b)
    ours.train(), theirs.train()
    steps = {
        "transformers": timed_step(lambda batch: hf_loss(theirs, batch), theirs),
        "muppets": timed_step(lambda batch: ours_loss(ours, batch), ours),
    }
    batches = make_batches(args.batches, args.batch_size, args.seq_len, args.num_predict, config)
    for step in steps.values():
        step(batches[0])  # warm-up: allocator, kernels
    wall = {name: float("inf") for name in steps}
    cpu = dict(wall)
    for round_ in range(args.rounds):  # step by step in turns, against drift
        spent = {name: [0.0, 0.0] for name in steps}
        for batch in batches:
            for name in list(steps)[:: 1 if round_ % 2 else -1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                steps[name](batch)
                spent[name][0] += time.perf_counter() - start
                spent[name][1] += time.process_time() - start_cpu
        for name, (w, c) in spent.items():
            wall[name] = min(wall[name], w / len(batches))
            cpu[name] = min(cpu[name], c / len(batches))
    print(
        f"{args.model} (d_model {config.d_model}, {config.n_layer} layers), batch "
        f"{args.batch_size} x seq_len {args.seq_len}, mem_len {args.mem_len}, num_predict "
        f"{args.num_predict}, {args.threads} threads, torch {torch.__version__}, transformers "
        f"{transformers.__version__}"
    )
    # Wall time, and the process's CPU time: on a machine shared with other jobs the second
    # leaves out the time this process waited for a core.
    tokens = args.batch_size * args.seq_len
    print("| clock | transformers tok/s | muppets tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    for clock, seconds in (("wall", wall), ("CPU", cpu)):
        t, m = tokens / seconds["transformers"], tokens / seconds["muppets"]
        print(f"| {clock} | {t:.0f} | {m:.0f} | {m / t:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
