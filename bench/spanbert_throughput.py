"""SpanBERT pretraining speed: muppets' MLM + SBO step vs transformers' BertForMaskedLM with the
span boundary head written plainly over its hidden states.

Both sides take the same single-segment batches, span-masked by the data pipeline's masker
(data/masking.mask_spans: geometric lengths, p = 0.2, clipped at 10 words), and the same weights
(ours converted with models/hf.py; the reference's SBO head is our head module, fed from
transformers' (B, T, H) output at the boundary positions; checked: the same loss on a check
batch). Loss: mean MLM cross-entropy + mean SBO cross-entropy over the masked tokens, backward,
clip at 1.0, fused AdamW. transformers runs the layers over padding and the vocabulary projection
at every position; ours at real tokens and masked positions only. Dropout off on both.
Interleaved rounds in one process; real tokens per second, the best round of each:

    .venv/bin/python bench/spanbert_throughput.py --model bert-base
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from step_timing import compare, lengths_of, timed_step

from muppets.data.masking import MaskingConfig, mask_spans
from muppets.models.hf import bert_state_dict_to_hf, config_to_hf
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.models.span_boundary import POSITION_SIZE, span_boundaries
from muppets.tasks.objectives import objective_for, total_loss

CLS, SEP, MASK = 2, 3, 4
# wall: time.perf_counter; cpu: the process's CPU time (on a shared machine, the time it ran)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def make_batches(n, batch_size, vocab_size, lengths, seed=0):
    """[CLS] text [SEP], right-padded, masked by SpanBERT's span masker (one-piece words)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    masking = MaskingConfig(vocab_size, MASK, (0, CLS, SEP), 0.15, None)
    continuation = np.zeros(vocab_size, dtype=bool)
    batches = []
    for _ in range(n):
        lens = lengths_of(batch_size, lengths, g)
        T = int(lens.max())
        ids = torch.zeros(batch_size, T, dtype=torch.long)
        labels = torch.full((batch_size, T), -100)
        for b, length in enumerate(lens.tolist()):
            row = np.array([CLS, *rng.integers(5, vocab_size, length - 2), SEP])
            masked, row_labels = mask_spans(row, rng, masking, continuation)
            ids[b, :length], labels[b, :length] = (
                torch.from_numpy(masked),
                torch.from_numpy(row_labels),
            )
        real = torch.arange(T)[None, :] < lens[:, None]
        batches.append({"input_ids": ids, "attention_mask": real.long(), "labels": labels})
    return batches


def hf_model(ours, config):
    import transformers

    values = config_to_hf(config, with_pair_head=False)
    model = transformers.BertForMaskedLM(
        transformers.BertConfig(**values, attn_implementation="sdpa")
    )
    sd = bert_state_dict_to_hf(
        {k: v for k, v in ours.state_dict().items() if "sbo_head" not in k}, config
    )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert set(unexpected) <= {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}, unexpected
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    # the SBO head written plainly over transformers' hidden states: the same module, weights
    model.sbo_head = ours.sbo_head.__class__(
        config.hidden_size, config.vocab_size, config.hidden_act, config.layer_norm_eps, 0.02
    )
    model.sbo_head.load_state_dict(ours.sbo_head.state_dict())
    return model


def hf_loss(model, batch):
    labels = batch["labels"]
    hidden = model.bert(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state  # (B, T, H)
    logits = model.cls(hidden)  # (B, T, V): every position, as BertForMaskedLM
    mlm = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    masked = labels.ne(-100)
    left, right, offset = span_boundaries(masked)
    rows = hidden.flatten(0, 1)  # (B * T, H)
    words = model.bert.embeddings.word_embeddings.weight
    sbo = model.sbo_head(rows[left], rows[right], offset, words)
    return mlm + F.cross_entropy(sbo, labels[masked])


def ours_loss(model, objective, batch):
    return total_loss(objective(model, batch), objective.count_targets(batch))


def flop_ratio(config, batches) -> float:
    """Forward FLOPs of the reference / ours over the batches (training is ~3x both): the ratio
    that equal matmul efficiency on both sides would give. Both run attention over (B, T); the
    reference runs every layer and the MLM head at all B x T positions, ours the layers at the N
    real tokens (the last layer's output projection and feed-forward at the R rows the heads
    read) and the MLM head at the M masked ones; the SBO head at M on both sides."""
    H, Im, V = config.hidden_size, config.intermediate_size, config.vocab_size
    L = config.num_hidden_layers
    qkv, rest = 2 * 3 * H * H, 2 * (H * H + 2 * H * Im)  # per token of one layer
    head = 2 * (H * H + H * V)  # MLM head: dense + vocabulary projection, per row
    sbo = 2 * ((2 * H + POSITION_SIZE) * H + H * H + H * V)
    theirs = ours = 0
    for batch in batches:
        B, T = batch["input_ids"].shape
        N = int(batch["attention_mask"].sum())
        masked = batch["labels"].ne(-100)
        M = int(masked.sum())
        left, right, _ = span_boundaries(masked)
        R = len(
            set(masked.flatten().nonzero().squeeze(1).tolist() + left.tolist() + right.tolist())
        )
        attention = L * 4 * T * H * B * T
        theirs += L * (qkv + rest) * B * T + attention + head * B * T + sbo * M
        ours += L * qkv * N + (L - 1) * rest * N + rest * R + attention + (head + sbo) * M
    return theirs / ours


def profile(name, step, batches, rows=30):
    """torch.profiler's table of one side's steps over the batches, by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiler

    step(batches[0])  # warm-up
    with run_profiler(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            step(batch)
    print(f"{name}: {len(batches)} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="bert-base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--profile", choices=("muppets", "transformers"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    config = preset_config(args.model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ours = build_pretraining_model(config, with_pair_head=False, with_sbo_head=True).train()
    theirs = hf_model(ours, config).train()
    objective = objective_for("mlm+sbo")
    check = make_batches(1, 4, config.vocab_size, "16..128", seed=1)[0]
    with torch.no_grad():  # the same weights: the same loss
        a, b = ours_loss(ours, objective, check), hf_loss(theirs, check)
        assert torch.allclose(a, b, rtol=1e-4), (a, b)
    steps = {
        "muppets": timed_step(lambda batch: ours_loss(ours, objective, batch), ours),
        "transformers": timed_step(lambda batch: hf_loss(theirs, batch), theirs),
    }
    print(
        f"{args.model} + SBO head, batch {args.batch_size}, {args.threads} threads, "
        f"{args.clock} clock, "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    made = {}

    def batches_for(lengths):
        made[lengths] = make_batches(args.batches, args.batch_size, config.vocab_size, lengths)
        return made[lengths]

    if args.profile:
        profile(args.profile, steps[args.profile], batches_for("16..128"))
        return
    compare(steps, batches_for, args.rounds, CLOCKS[args.clock])
    for lengths, batches in made.items():
        print(
            f"FLOP ratio (transformers / muppets, forward), {lengths}: "
            f"{flop_ratio(config, batches):.2f}x"
        )


if __name__ == "__main__":
    main()
