"""ALBERT pretraining speed: muppets' MLM + SOP step vs transformers' AlbertForPreTraining.

Both sides take the same batches (static masks as the data pipeline makes them: 15% of the real
tokens, labels -100 elsewhere, a sentence-order label per row) and the same initial weights
(ours converted with models/hf_albert.py; checked: the same loss on a check batch). The loss is
the mean MLM cross-entropy over masked tokens + the mean SOP cross-entropy, backward, clip at
1.0, fused AdamW. transformers computes the vocabulary projection at every position and the
layers over padding; ours at masked positions and real tokens only. Dropout off on both (ALBERT's
released configs have none). Interleaved rounds in one process; real tokens per second, the best
round of each. Run with tcmalloc as the other benches:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python bench/albert_throughput.py --model albert-base
"""

from __future__ import annotations

import argparse
import time

import torch
from step_timing import compare, lengths_of, timed_step

from muppets.models.hf_albert import config_to_hf, state_dict_to_hf
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tasks.objectives import objective_for, total_loss

CLS, SEP, MASK = 2, 3, 4
# wall: time.perf_counter; cpu: the process's CPU time (on a shared machine, the time it ran)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def make_batches(n, batch_size, vocab_size, lengths, seed=0):
    """Random pairs [CLS] A [SEP] B [SEP], right-padded, 15% of the real tokens masked."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        lens = lengths_of(batch_size, lengths, g)
        T = int(lens.max())
        ids = torch.randint(5, vocab_size, (batch_size, T), generator=g)
        real = torch.arange(T)[None, :] < lens[:, None]  # (B, T)
        middle = lens // 2
        rows = torch.arange(batch_size)
        ids[:, 0], ids[rows, middle], ids[rows, lens - 1] = CLS, SEP, SEP
        ids[~real] = 0
        segments = ((torch.arange(T)[None, :] > middle[:, None]) & real).long()
        special = (ids == CLS) | (ids == SEP) | ~real
        masked = (torch.rand(batch_size, T, generator=g) < 0.15) & ~special
        labels = torch.where(masked, ids, -100)
        batches.append(
            {
                "input_ids": ids.masked_fill(masked, MASK),
                "attention_mask": real.long(),
                "token_type_ids": segments,
                "labels": labels,
                "sentence_order_label": torch.randint(0, 2, (batch_size,), generator=g),
            }
        )
    return batches


def hf_model(ours, config):
    import transformers

    # google-research/albert's SOP head has no dropout (run_pretraining.py,
    # get_sentence_order_output); transformers' AlbertSOPHead has classifier_dropout_prob.
    values = {**config_to_hf(config), "classifier_dropout_prob": 0.0}
    hf_config = transformers.AlbertConfig(**values, attn_implementation="sdpa")
    model = transformers.AlbertForPreTraining(hf_config)
    missing, unexpected = model.load_state_dict(
        state_dict_to_hf(ours.state_dict(), config), strict=False
    )
    assert not unexpected and set(missing) <= {
        "predictions.decoder.weight",
        "predictions.decoder.bias",
    }, missing
    return model


def hf_loss(model, batch):
    """AlbertForPreTraining's own loss: MLM mean + SOP mean (modeling_albert.py)."""
    return model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        labels=batch["labels"],
        sentence_order_label=batch["sentence_order_label"],
    ).loss


def ours_loss(model, objective, batch):
    return total_loss(objective(model, batch), objective.count_targets(batch))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="albert-base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    config = preset_config(args.model)
    torch.manual_seed(0)
    ours = build_pretraining_model(config).train()
    theirs = hf_model(ours, config).train()
    objective = objective_for("mlm+sop")
    check = make_batches(1, 4, config.vocab_size, "16..128", seed=1)[0]
    with torch.no_grad():  # the same weights: the same loss
        a, b = ours_loss(ours, objective, check), hf_loss(theirs, check)
        assert torch.allclose(a, b, rtol=1e-4), (a, b)
    steps = {
        "muppets": timed_step(lambda batch: ours_loss(ours, objective, batch), ours),
        "transformers": timed_step(lambda batch: hf_loss(theirs, batch), theirs),
    }
    print(
        f"{args.model} (E {config.embedding_size}, H {config.hidden_size}, "
        f"{config.num_hidden_layers} layers in {config.num_hidden_groups} group), "
        f"batch {args.batch_size}, {args.threads} threads, {args.clock} clock, "
        f"torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    compare(
        steps,
        lambda lengths: make_batches(args.batches, args.batch_size, config.vocab_size, lengths),
        args.rounds,
        CLOCKS[args.clock],
    )


if __name__ == "__main__":
    main()
