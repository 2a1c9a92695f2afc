"""Fine-tuning speed: muppets vs transformers' BertForSequenceClassification on SST-2, one process.

Both models get the same config (bert-mini, the tokenizer's vocabulary, dropout 0.1 as in
fine-tuning), the same initial weights (checked: the same logits), the same token ids and the same
optimizer (fused AdamW, transformers' default since torch 2.8). A training step is forward + loss
+ backward + clip + optimizer step; inference is a no_grad forward. Two pairs of rows:

- same batches: identical batches for both, in random order (training) or file order
  (inference), padded to the longest of each batch as DataCollatorWithPadding does. Measures the
  models alone (muppets packs out the padding inside the encoder).
- pipelines: transformers as its Trainer feeds it (random batches, or file order for evaluation,
  padded to the longest); muppets with its own batches (length-bucketed "sortish" batches for
  training, length-sorted ones for inference). The same examples, batch size and steps.

Sentences: SST-2 train/dev from ../shared/data/glue/SST-2 (beside the project root) when
present, else lines of the bundled sample text (labels alternate). Run with tcmalloc preloaded,
as `make` does:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python bench/finetune_throughput.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from muppets.data.readers.tabular import Example
from muppets.data.task_features import bucketed_batches, classification_features, collate_features
from muppets.models.hf import config_to_hf
from muppets.models.registry import build_encoder, preset_config
from muppets.tasks.classification import (
    HF_CLASSIFIER_KEYS,
    ClassificationObjective,
    SequenceClassifier,
    task_state_dict_to_hf,
)
from muppets.tokenization.wordpiece import load_tokenizer, train_wordpiece
from muppets.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue" / "SST-2"
TOKENIZER = ROOT / "bench" / "out" / "tokenizer-30522"


def load_examples(n_train: int) -> tuple[list[Example], list[Example], str]:
    """(train, dev, where from): SST-2's first n_train train and all dev sentences, or samples."""
    if (SST2 / "train.tsv").is_file():
        from muppets.data.readers.glue import read_glue

        train = read_glue(SST2 / "train.tsv", "sst2", "train")[:n_train]
        return train, read_glue(SST2 / "dev.tsv", "sst2", "dev"), str(SST2)
    sample = ROOT / "muppets" / "samples" / "wiki.train.txt"
    lines = [t for t in sample.read_text(encoding="utf-8").splitlines() if t.strip()]
    lines = [t for t in lines if not t.startswith(("<doc", "</doc"))]
    examples = [Example(t, None, n % 2, f"s-{n}", str(sample), n) for n, t in enumerate(lines)]
    return examples[:n_train], examples[n_train : n_train + 872], str(sample)


def tokenizer_for(texts: list[str]):
    if (TOKENIZER / "tokenizer.json").is_file():
        return load_tokenizer(TOKENIZER)
    return train_wordpiece(texts, vocab_size=30522)


def build_models(vocab_size: int, pad_id: int):
    import transformers

    config = preset_config("bert-mini", vocab_size=vocab_size, pad_token_id=pad_id)
    torch.manual_seed(0)
    ours = SequenceClassifier(build_encoder(config), num_labels=2)
    hf_config = transformers.BertConfig(
        **config_to_hf(config, with_pair_head=False), num_labels=2, attn_implementation="sdpa"
    )
    hf = transformers.BertForSequenceClassification(hf_config)
    assert hf.config._attn_implementation == "sdpa"
    weights = task_state_dict_to_hf(ours.state_dict(), config, HF_CLASSIFIER_KEYS)
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), missing
    return ours, hf


def train_step(name: str, model, optimizer):
    objective = ClassificationObjective()

    def step(batch):
        if name == "muppets":  # the loop's reduction: loss sum / number of labels
            loss = objective(model, batch)["classification"] / len(batch["labels"])
        else:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def infer_step(name: str, model):
    @torch.no_grad()
    def step(batch):
        inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return model(*inputs) if name == "muppets" else model(*inputs).logits

    return step


def examples_per_second(step, batches) -> tuple[float, float]:
    """Examples per wall second and per CPU second of this process (all its threads): CPU time
    is less disturbed by other jobs on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        step(batch)
    n = sum(len(b["input_ids"]) for b in batches)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def padding_share(batches) -> float:
    cells = sum(b["input_ids"].numel() for b in batches)
    return 1 - sum(int(b["attention_mask"].sum()) for b in batches) / cells


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-examples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    train, dev, source = load_examples(args.train_examples)
    tokenizer = tokenizer_for([e.text_a for e in train])
    pad = tokenizer.pad_id
    train_features = classification_features(train, tokenizer, 128)
    dev_features = classification_features(dev, tokenizer, 128)
    ours, hf = build_models(tokenizer.vocab_size, pad)

    def batches(features, order):
        return [collate_features([features[i] for i in idx], pad) for idx in order]

    B, rng = args.batch_size, np.random.default_rng(0)
    random_order = np.array_split(rng.permutation(len(train_features)), len(train_features) // B)
    lengths = [len(f) for f in train_features]
    sortish = bucketed_batches(lengths, B, np.random.default_rng(0))[: len(random_order)]
    file_order = [
        np.arange(i, min(i + args.eval_batch_size, len(dev_features)))
        for i in range(0, len(dev_features), args.eval_batch_size)
    ]
    sorted_order = bucketed_batches([len(f) for f in dev_features], args.eval_batch_size)
    work = {
        "train": (batches(train_features, random_order), batches(train_features, sortish)),
        "inference": (batches(dev_features, file_order), batches(dev_features, sorted_order)),
    }
    check = work["inference"][0][0]
    ours.eval(), hf.eval()
    with torch.no_grad():  # the same model: the same logits
        a = ours(check["input_ids"], check["attention_mask"], check["token_type_ids"])
        b = hf(check["input_ids"], check["attention_mask"], check["token_type_ids"]).logits
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    ours.train(), hf.train()
    steps = {
        "train": {
            "muppets": train_step("muppets", ours, build_optimizer(ours, 2e-5)),
            "transformers": train_step("transformers", hf, build_optimizer(hf, 2e-5)),
        },
        "inference": {
            "muppets": infer_step("muppets", ours),
            "transformers": infer_step("transformers", hf),
        },
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bert-mini (vocab {tokenizer.vocab_size}), {len(train)} train / {len(dev)} dev "
        f"sentences from {source}; train batch {B}, inference batch {args.eval_batch_size}; "
        f"{args.threads} threads, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; load average {load:.1f} at start"
    )
    print(
        "| work | batches | padding (HF / ours) | transformers ex/s | muppets ex/s | ratio "
        "| ex per CPU s (HF / ours) | ratio by CPU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, (same, own) in work.items():
        mode = (
            (lambda: (ours.train(), hf.train()))
            if kind == "train"
            else (lambda: (ours.eval(), hf.eval()))
        )
        mode()
        for step in steps[kind].values():  # warm-up: allocator, kernels
            step(same[0])
        rows = {"same batches": (same, same), "pipelines": (same, own)}
        speed: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(args.rounds):  # interleaved against drift; the best round is kept
            for row, (hf_batches, our_batches) in rows.items():
                for name, run in (("transformers", hf_batches), ("muppets", our_batches)):
                    wall, cpu = examples_per_second(steps[kind][name], run)
                    old = speed.get((row, name), (0.0, 0.0))
                    speed[row, name] = (max(old[0], wall), max(old[1], cpu))
        for row, (hf_batches, our_batches) in rows.items():
            (t, tc), (m, mc) = speed[row, "transformers"], speed[row, "muppets"]
            padding = f"{padding_share(hf_batches):.0%} / {padding_share(our_batches):.0%}"
            print(
                f"| {kind} | {row} | {padding} | {t:.0f} | {m:.0f} | {m / t:.2f}x "
                f"| {tc:.0f} / {mc:.0f} | {mc / tc:.2f}x |"
            )


if __name__ == "__main__":
    main()
