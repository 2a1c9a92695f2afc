"""Held-out MLM loss of a pretraining run next to the unigram-frequency baseline.

The baseline (muppets/tasks/baselines.py) predicts every masked token from the training corpus's
token frequencies (add-one smoothed) whatever the context: the loss a model gets from learning
nothing but the unigram distribution. It is measured on exactly the held-out instances the run
evaluates on (the same config, seed and masks), so the two losses are directly comparable.

    .venv/bin/python bench/mlm_baseline.py runs/bert-mini
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from muppets.cli.args import load_toml
from muppets.data.shards import ShardedCorpus
from muppets.recipes.pretrain import PretrainConfig, held_out_batches
from muppets.tasks.baselines import unigram_baseline, unigram_counts
from muppets.tokenization.wordpiece import load_tokenizer
from muppets.training.options import from_options


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    config = from_options(PretrainConfig, **load_toml(args.run / "pretrain.toml"))
    tokenizer = load_tokenizer(config.train_data)

    shards = ShardedCorpus(config.train_data).shards
    counts = unigram_counts((shard.tokens for shard in shards), tokenizer.vocab_size)
    batches = held_out_batches(config, tokenizer)
    targets = np.concatenate([b["labels"][b["labels"] != -100].numpy() for b in batches])
    baseline = unigram_baseline(counts, targets)
    baseline_loss, baseline_accuracy = baseline["loss"], baseline["accuracy"]

    records = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["event"] == "eval"]
    print(f"held-out: {len(targets):,} masked tokens of {config.valid_data}")
    print("| | step | MLM loss | MLM perplexity | MLM accuracy | NSP accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| unigram baseline | - | {baseline_loss:.3f} | {math.exp(baseline_loss):.0f} | "
        f"{baseline_accuracy:.3f} | 0.500 |"
    )
    for r in evals:
        nsp = r.get("nsp_accuracy")
        print(
            f"| {config.model} | {r['step']} | {r['mlm_loss']:.3f} | {math.exp(r['mlm_loss']):.0f} "
            f"| {r['mlm_accuracy']:.3f} | {'-' if nsp is None else f'{nsp:.3f}'} |"
        )


if __name__ == "__main__":
    main()
