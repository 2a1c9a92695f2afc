"""ELECTRA pretraining speed: muppets' joint step vs the same step written with transformers.

The reference step: transformers' ElectraForMaskedLM (generator) + ElectraForPreTraining
(discriminator) sharing one ElectraEmbeddings module (and the generator's tied decoder), as
google-research/electra ties them; ELECTRA's masking (tasks/electra_objective.electra_mask) and
Gumbel-max sampling (models/electra.sample_from_softmax) are called by both sides, so the two
steps do the same work on the same batches: generator MLM loss + 50 x discriminator BCE,
backward, clip at 1.0, fused AdamW. Same configs, same initial weights (checked: the same loss on
a check batch), dropout off on both, variable lengths 16..128 and full 128. Interleaved rounds in
one process; real (non-padding) tokens per second, the best round of each. Run as `make` runs
the other benches, with tcmalloc:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python bench/electra_throughput.py --model electra-small

--clock cpu divides by the process's CPU time instead of the wall clock: on a machine shared
with other jobs, at --threads 1, it counts the work of each step and not the time the step
waited for a core.
"""

from __future__ import annotations

import argparse
import time

import torch

from muppets.models.electra import ElectraPretrainingModel, sample_from_softmax
from muppets.models.hf_electra import config_to_hf, state_dict_to_hf
from muppets.models.registry import preset_config
from muppets.tasks.electra_objective import ElectraObjective, electra_mask
from muppets.training.optim import build_optimizer

CLS, SEP, MASK = 2, 3, 4


def make_batches(n, batch_size, vocab_size, lengths, seed=0):
    """Random ids with [CLS]/[SEP] ends and right padding; ELECTRA masks them in the step."""
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
        ids[:, 0], ids[torch.arange(batch_size), lens - 1] = CLS, SEP
        ids[~mask] = 0
        batches.append({"input_ids": ids, "attention_mask": mask.long()})
    return batches


def hf_pair(ours: ElectraPretrainingModel, config):
    """transformers' two towers with our weights, sharing the embeddings module."""
    import transformers

    towers = {}
    state = ours.state_dict()
    for tower, cls in (
        ("discriminator", transformers.ElectraForPreTraining),
        ("generator", transformers.ElectraForMaskedLM),
    ):
        hf_config = transformers.ElectraConfig(
            **config_to_hf(config, tower), attn_implementation="sdpa"
        )
        model = cls(hf_config)
        missing, unexpected = model.load_state_dict(
            state_dict_to_hf(state, config, tower), strict=False
        )
        assert not unexpected and all(k == "generator_lm_head.weight" for k in missing), missing
        towers[tower] = model
    disc, gen = towers["discriminator"], towers["generator"]
    gen.electra.embeddings = disc.electra.embeddings  # tie_embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    return torch.nn.ModuleDict({"generator": gen, "discriminator": disc})


def hf_loss(pair, batch, generator):
    original, attention = batch["input_ids"], batch["attention_mask"]
    masked_ids, masked = electra_mask(
        original, attention, mask_id=MASK, special_ids=(CLS, SEP, MASK), generator=generator
    )
    labels = torch.where(masked, original, -100)
    gen = pair["generator"](input_ids=masked_ids, attention_mask=attention, labels=labels)
    sampled = sample_from_softmax(gen.logits[masked].detach(), 1.0, generator)
    fake = original.masked_scatter(masked, sampled)
    disc = pair["discriminator"](
        input_ids=fake, attention_mask=attention, labels=fake.ne(original).long()
    )
    return gen.loss + 50.0 * disc.loss


def ours_loss(model, objective, batch, generator):
    counts = objective.count_targets(batch)
    sums = ElectraObjective(MASK, (CLS, SEP, MASK), generator=generator)(model, batch)
    return sums["mlm"] / counts["mlm"] + sums["disc"] / counts["disc"]


def timed_step(loss_fn, model, optimizer):
    def step(batch, seed):
        loss_fn(batch, torch.Generator().manual_seed(seed)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tokens_per_second(step, batches, clock=time.perf_counter):
    start = clock()
    for i, batch in enumerate(batches):
        step(batch, i)
    return sum(int(b["attention_mask"].sum()) for b in batches) / (clock() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="electra-small")
    parser.add_argument("--generator-hidden-size", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    import transformers

    overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if args.generator_hidden_size is not None:
        overrides["generator_hidden_size"] = args.generator_hidden_size
    config = preset_config(args.model, **overrides)
    torch.manual_seed(0)
    ours = ElectraPretrainingModel(config).train()
    pair = hf_pair(ours, config).train()
    objective = ElectraObjective(MASK, (CLS, SEP, MASK))
    check = make_batches(1, 4, config.vocab_size, "16..128", seed=1)[0]
    with torch.no_grad():  # the same model and draws: the same loss
        a = ours_loss(ours, objective, check, torch.Generator().manual_seed(0))
        b = hf_loss(pair, check, torch.Generator().manual_seed(0))
        assert torch.allclose(a, b, rtol=1e-4), (a, b)
    steps = {
        "muppets": timed_step(
            lambda batch, g: ours_loss(ours, objective, batch, g), ours, build_optimizer(ours)
        ),
        "transformers": timed_step(
            lambda batch, g: hf_loss(pair, batch, g), pair, build_optimizer(pair)
        ),
    }
    names = ["transformers", "muppets"]
    g = config.generator_config()
    print(
        f"{args.model} (generator hidden {g.hidden_size}), batch {args.batch_size}, "
        f"{args.threads} threads, {args.clock} clock, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print("| lengths | transformers tok/s | muppets tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    for lengths in ("16..128", "full"):
        batches = make_batches(args.batches, args.batch_size, config.vocab_size, lengths)
        for name in names:
            steps[name](batches[0], 0)  # warm-up: allocator, kernels
        speed = {}
        for name in names * args.rounds:  # interleaved against drift
            rate = tokens_per_second(steps[name], batches, clock)
            speed[name] = max(speed.get(name, 0.0), rate)
        cells = [f"{speed['transformers']:.0f}"]
        cells += [f"{speed['muppets']:.0f}", f"{speed['muppets'] / speed['transformers']:.2f}x"]
        print(f"| {lengths} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
