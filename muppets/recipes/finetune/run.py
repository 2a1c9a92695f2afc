"""`muppets finetune`: task + pretrained encoder + head -> train() -> the best model on dev.

Devlin et al. 2019 (https://arxiv.org/abs/1810.04805) section 4 and appendix A.3: all weights
fine-tuned with Adam, a learning rate in {5e-5, 3e-5, 2e-5}, a few epochs, warmup over 10% of the
steps then linear decay, weight decay 0.01, a batch of 32, and the best model on dev kept. Runs
are noisy on small sets, so several seeds are run and their median reported (section 4.1 reruns
BERT-large "with random restarts"). `--freeze` trains only the head on frozen encoder features
(the feature-based approach of section 5.3).

Every run directory `<out>/seed-<s>/` is a fine-tuned checkpoint (see evaluation.py) plus
metrics.json, metrics.jsonl, loss.png and dev_metric.png, and the dev predictions of the best
model. `--task glue` runs every GLUE task found under --data into `<out>/<task>/` and prints the
standard table (glue.json beside it). `--downstream bilstm|bag-of-embeddings` trains a small task
model over frozen ELMo features (or `--model random-embeddings`) instead: finetune_features.py.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from muppets.data.task_features import EpochBatches, collate_features
from muppets.errors import ConfigError, InputError
from muppets.models.registry import PRESETS, build_encoder, preset_config
from muppets.recipes.finetune.features import check_downstream, downstream_seed, prepare_downstream
from muppets.tasks.prediction import evaluate_examples, numbers, write_predictions
from muppets.tasks.registry import (
    GLUE,
    TASKS,
    Columns,
    build_head,
    split_path,
    task_objective,
    task_spec,
    training_labels,
)
from muppets.tasks.setup import TaskSetup, save_task
from muppets.tokenization.wordpiece import WordPieceTokenizer, load_tokenizer
from muppets.training import logging as log
from muppets.training.checkpoint import load_weights
from muppets.training.device import pick_device
from muppets.training.logging import plot_dev_scores
from muppets.training.loop import TrainConfig, train
from muppets.training.pretrained import check_vocabulary, load_pretrained, resolve_checkpoint

PREDICTION_FILES = {"span_qa": "dev_predictions.json", "tagging": "dev_predictions.txt"}


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


def _column(text: str | None) -> str | int | None:
    """A column given on the command line: an integer is an index, anything else a name."""
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass
class FinetuneConfig:
    task: str = _help(f"{', '.join(TASKS)}, or glue (every GLUE task under --data)", "")
    data: str | None = _help("data directory (GLUE: holding SST-2/...; CoNLL: train.txt...)", None)
    train_file: str | None = _help("training file (instead of the one under --data)", None)
    dev_file: str | None = _help("dev file (instead of the one under --data)", None)
    model: str = _help("checkpoint directory, or a preset from scratch (or random-embeddings)", "")
    tokenizer: str | None = _help("tokenizer directory (default: the checkpoint's)", None)
    out: str = _help("output directory (one seed-<s>/ per seed)", "runs/finetune")
    seeds: str = _help("comma-separated seeds; each is run and the median reported", "1")
    freeze: bool = _help("train only the head on frozen encoder features", False)
    epochs: int = _help("passes over the training data", 3)
    learning_rate: float = _help("peak learning rate (BERT: 5e-5, 3e-5 or 2e-5)", 2e-5)
    batch_size: int = _help("training examples (QA: windows) per step", 32)
    eval_batch_size: int = _help("examples per prediction batch", 128)
    max_seq_length: int | None = _help("tokens per input (default: 128, QA 384)", None)
    warmup_ratio: float = _help("share of steps with a rising learning rate", 0.1)
    weight_decay: float = _help("AdamW weight decay (not on biases and norms)", 0.01)
    adam_epsilon: float = _help("AdamW epsilon (BERT's 1e-6)", 1e-6)
    max_grad_norm: float = _help("gradient clipping norm", 1.0)
    evals_per_epoch: int = _help("dev evaluations per epoch", 1)
    early_stopping_patience: int = _help("stop after N evaluations without a better dev score", 2)
    pooling: str = _help("classification input: pooler, cls or mean", "pooler")
    log_every: int = _help("steps between log records", 50)
    device: str = _help("cpu, cuda or auto", "auto")
    # tabular tasks: the column mapping (a header name, or an integer index)
    text_a: str = _help("tabular: column of the first text", "sentence")
    text_b: str | None = _help("tabular: column of the second text (pairs)", None)
    label_column: str = _help("tabular: column of the label", "label")
    labels: list[str] | None = _help("class names in id order (default: from the train file)", None)
    format: str | None = _help("tabular: tsv, csv or jsonl (default: from the file name)", None)
    header: bool = _help("tabular: the first row names the columns", True)
    # extractive QA
    doc_stride: int = _help("QA: context tokens between window starts", 128)
    max_query_length: int = _help("QA: question tokens kept", 64)
    max_answer_length: int = _help("QA: longest answer in tokens", 30)
    null_threshold: float = _help("SQuAD v2.0: answer '' when null - best > this", 0.0)
    # frozen features under a small task model (finetune_features.py)
    downstream: str | None = _help("bilstm or bag-of-embeddings over frozen ELMo features", None)
    downstream_learning_rate: float = _help("--downstream: peak Adam learning rate", 1e-3)
    downstream_hidden_size: int = _help("--downstream bilstm: LSTM size per direction", 256)
    downstream_dropout: float = _help("--downstream: dropout on features and states", 0.5)
    embedding_dim: int = _help("--model random-embeddings: word embedding size", 300)
    min_count: int = _help("--model random-embeddings: rarer training words are <UNK>", 2)
    elmo_word_embeddings: bool = _help(
        "--model ELMO: concatenate trainable word embeddings (--embedding-dim, vocabulary of the "
        "training split as for random-embeddings) with the ELMo mix, as Peters et al. 2018 "
        "section 3.3",
        False,
    )
    whitespace_tokens: bool = _help("--downstream: words split on whitespace only (SST-2)", False)
    feature_cache_mb: int = _help("ELMo: cache all layers if they fit (0: biLM every batch)", 2048)

    def __post_init__(self):
        if not self.task or not self.model:
            raise ConfigError("task and model are required (e.g. --task sst2 --model DIR)")
        if self.task != "glue":
            task_spec(self.task)
        elif self.train_file or self.dev_file:
            raise ConfigError("--task glue reads every task's files under --data, not --*-file")
        rules = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                 ("evals_per_epoch", self.evals_per_epoch >= 1), ("learning_rate",
                 self.learning_rate > 0)]  # fmt: skip
        for name, ok in rules:
            if not ok:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        self.seed_list()
        check_downstream(self)

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in str(self.seeds).split(",") if s.strip()]
        except ValueError:
            message = f"seeds must be comma-separated integers, got {self.seeds!r}"
            raise ConfigError(message) from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct integers, got {self.seeds!r}")
        return seeds

    def columns(self) -> Columns:
        return Columns(_column(self.text_a), _column(self.text_b), _column(self.label_column),
                       self.format, self.header)  # fmt: skip


def finetune(config: FinetuneConfig) -> dict:
    """Every seed of the task (or of every GLUE task found); returns {task: summary}."""
    if config.task != "glue":
        return {config.task: finetune_task(config, config.task, Path(config.out))}
    if not config.data:
        raise ConfigError("--task glue needs --data DIR (holding CoLA/, SST-2/, ...)")
    found = [t for t in GLUE if _has_glue_files(t, config.data)]
    if not found:
        raise InputError("no GLUE task folder with train and dev files here", config.data)
    results = {t: finetune_task(config, t, Path(config.out) / t) for t in found}
    rows = glue_rows(results)
    table = format_table(rows)
    print("\n" + table)
    (Path(config.out) / "glue.json").write_text(json.dumps(rows, indent=2) + "\n")
    (Path(config.out) / "glue.txt").write_text(table + "\n")
    return results


def _has_glue_files(task: str, data: str) -> bool:
    try:
        return all(split_path(TASKS[task], data, s) for s in ("train", *TASKS[task].dev_splits))
    except InputError:
        return False


def finetune_task(config: FinetuneConfig, name: str, out: Path) -> dict:
    """Read and featurize once, then train one model per seed; summary.json holds the median."""
    spec, columns = task_spec(name), config.columns()
    for seed in config.seed_list():  # refuse before any work, not after the first seed
        if (out / f"seed-{seed}").exists() and any((out / f"seed-{seed}").iterdir()):
            raise InputError("not empty: fine-tune into a new --out", out / f"seed-{seed}")
    train_path = Path(config.train_file or split_path(spec, config.data, "train"))
    if config.dev_file:  # MNLI: it replaces dev_matched
        dev_paths = {spec.dev_splits[0]: Path(config.dev_file)}
    else:
        dev_paths = {split: split_path(spec, config.data, split) for split in spec.dev_splits}
    labels = list(config.labels or []) or training_labels(spec, train_path, columns)
    if config.downstream:  # frozen ELMo features (or the random-embeddings baseline)
        data = prepare_downstream(config, name, train_path, dev_paths, labels)
        run_seed = partial(downstream_seed, config, data)
    else:
        data = _prepare(config, name, train_path, dev_paths, labels)
        run_seed = partial(finetune_seed, config, data)
    runs = {seed: run_seed(seed, out / f"seed-{seed}") for seed in config.seed_list()}
    scores = {seed: run["score"] for seed, run in runs.items()}
    best_seed = max(scores, key=lambda s: -math.inf if math.isnan(scores[s]) else scores[s])
    summary = {"task": name, "metric": spec.metric, "scores": scores,
               "median": statistics.median(scores.values()), "best_seed": best_seed,
               "runs": runs}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = _shown(spec, summary["median"])
    print(f"{name}: median dev {spec.metric} over {len(scores)} seed(s): {shown}")
    return summary


def _prepare(config: FinetuneConfig, name: str, train_path: Path, dev_paths: dict,
             labels: list[str]) -> Prepared:  # fmt: skip
    """The task tokenized and featurized once, for every seed of an encoder run."""
    spec, columns = task_spec(name), config.columns()
    tokenizer = _tokenizer(config)
    setup = TaskSetup(
        task=name, head=spec.head, labels=labels, pooling=config.pooling,
        max_seq_length=config.max_seq_length or spec.max_seq_length,
        columns=vars(columns) if spec.reader == "table" else {}, doc_stride=config.doc_stride,
        max_query_length=config.max_query_length, max_answer_length=config.max_answer_length,
        null_threshold=config.null_threshold,
    )  # fmt: skip
    train_examples = setup.read(train_path, "train")
    dev = {s: setup.read(p, s) for s, p in dev_paths.items()}
    if spec.head == "span_qa":  # SQuAD v2.0 when any question is unanswerable
        everything = train_examples + [e for examples in dev.values() for e in examples]
        setup.squad_v2 = any(e.is_impossible for e in everything)
    featurized = setup.featurize(train_examples, tokenizer)
    train_features = [f for f in featurized if f.targets]  # QA: no usable answer offset
    dev_features = {s: setup.featurize(examples, tokenizer) for s, examples in dev.items()}
    skipped = len({f.example for f in featurized}) - len({f.example for f in train_features})
    if skipped:
        print(f"{name}: {skipped} training questions without a usable answer are not trained on")
    return Prepared(setup, tokenizer, train_examples, train_features, dev, dev_features)


def _shown(spec, value: float) -> str:
    return f"{value:.2f}" if spec.percent else f"{100 * value:.2f}"


def _tokenizer(config: FinetuneConfig):
    """--tokenizer, else the checkpoint's own (a preset from scratch needs --tokenizer)."""
    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    if config.model in PRESETS:
        raise ConfigError(f"--model {config.model} starts from scratch: give --tokenizer DIR")
    return load_tokenizer(resolve_checkpoint(config.model))


def load_encoder(config: FinetuneConfig, tokenizer, max_seq_length: int):
    """(encoder, its config): a preset from scratch sized to the tokenizer, or a checkpoint's
    encoder, whose vocabulary must be the tokenizer's."""
    if config.model in PRESETS:
        model_config = preset_config(
            config.model, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
            max_position_embeddings=max(512, max_seq_length),
        )  # fmt: skip
        encoder = build_encoder(model_config)
    else:
        pretrained, model_config, own = load_pretrained(config.model)
        check_vocabulary(tokenizer, model_config, config.tokenizer or config.model)
        if own.backend.get_vocab() != tokenizer.backend.get_vocab():
            raise InputError(
                f"the tokenizer's vocabulary is not the checkpoint's ({config.model}): "
                "they come from different vocabularies", config.tokenizer,
            )  # fmt: skip
        encoder = pretrained.encoder
    if max_seq_length > model_config.max_sequence_length:
        raise ConfigError(
            f"max_seq_length={max_seq_length} exceeds the model's "
            f"{model_config.max_sequence_length} positions"
        )
    return encoder, model_config


def freeze_encoder(encoder: nn.Module) -> None:
    """Frozen features: no gradients and no dropout inside the encoder (the features are fixed;
    SelfAttention keeps its dropout rate as a float, nn.Dropout as a module)."""
    encoder.requires_grad_(False)
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0


class Prepared(NamedTuple):
    """A task read and featurized once, shared by its seeds."""

    setup: TaskSetup
    tokenizer: WordPieceTokenizer
    train_examples: list
    train_features: list
    dev: dict[str, list]  # dev split -> examples
    dev_features: dict[str, list]


def finetune_seed(config: FinetuneConfig, data: Prepared, seed: int, run_dir: Path) -> dict:
    """One run: train with dev evaluation, keep the best, write the fine-tuned directory."""
    setup, tokenizer, train_examples, train_features, dev, dev_features = data
    spec = setup.spec
    device = pick_device(config.device)
    torch.manual_seed(seed)  # the head's initial weights
    encoder, model_config = load_encoder(config, tokenizer, setup.max_seq_length)
    dropout = model_config.hidden_dropout_prob
    model = build_head(spec, encoder, len(setup.labels), dropout, setup.pooling)
    if config.freeze:
        freeze_encoder(encoder)
    model.to(device)
    collate = functools.partial(collate_features, pad_id=tokenizer.pad_id)
    batches = EpochBatches(train_features, config.batch_size, collate, seed, config.epochs)
    per_epoch = batches.steps_per_epoch
    train_config = TrainConfig(
        max_steps=config.epochs * per_epoch, learning_rate=config.learning_rate,
        warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
        adam_epsilon=config.adam_epsilon, max_grad_norm=config.max_grad_norm,
        log_every=min(config.log_every, per_epoch),
        eval_every=max(1, per_epoch // config.evals_per_epoch), save_every=0, keep_checkpoints=1,
        seed=seed, best_metric=spec.metric, early_stopping_patience=config.early_stopping_patience,
    )  # fmt: skip
    first = spec.dev_splits[0]

    def evaluate_fn(model: nn.Module) -> dict:
        scores, _ = evaluate_examples(model, setup, dev[first], dev_features[first],
                                      tokenizer.pad_id, config.eval_batch_size)  # fmt: skip
        return numbers(scores)

    result = train(model, task_objective(spec), batches, train_config, run_dir,
                   config_dict=model_config.to_dict(), evaluate_fn=evaluate_fn)  # fmt: skip

    # The best model becomes the run directory; the training checkpoint (for resume) goes.
    load_weights(model, run_dir / "best")
    for name in ("config.json", "model.safetensors"):
        (run_dir / "best" / name).replace(run_dir / name)
    shutil.rmtree(run_dir / "best")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    tokenizer.save(run_dir)
    save_task(run_dir, setup)

    final = {}
    for split, examples in dev.items():
        final[split], predictions = evaluate_examples(
            model, setup, examples, dev_features[split], tokenizer.pad_id, config.eval_batch_size
        )
        if split == first:
            name = PREDICTION_FILES.get(setup.head, "dev_predictions.tsv")
            write_predictions(setup, examples, predictions, run_dir / name)
    history = log.eval_history(run_dir / "metrics.jsonl", per_epoch)
    best = result["best"]
    metrics = {
        "task": setup.task, "seed": seed, "metric": spec.metric,
        "score": final[first][spec.metric], "best_step": best["step"],
        "best_epoch": best["step"] / per_epoch, "dev": final, "history": history,
        "train_examples": len(train_examples), "train_features": len(train_features),
        "steps": result["step"], "stopped": result["stopped"], "freeze": config.freeze,
        "train_loss": result["train_loss"], "elapsed_seconds": result["elapsed_seconds"],
    }  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_dev_scores(history, spec.metric, run_dir / "dev_metric.png")
    shown = _shown(spec, metrics["score"])
    print(f"{setup.task} seed {seed}: dev {spec.metric} {shown} (best at epoch "
          f"{metrics['best_epoch']:.2f}, {result['stopped']})")  # fmt: skip
    return {k: metrics[k] for k in ("score", "best_step", "best_epoch", "dev", "stopped")}


# ---------------------------------------------------------------- the GLUE table


def glue_rows(results: dict[str, dict]) -> list[dict]:
    """One row per GLUE dev set (MNLI: matched and mismatched): the median over seeds of each
    metric, in the units GLUE reports (x100)."""
    rows = []
    for task, summary in results.items():
        runs = list(summary["runs"].values())
        for split in runs[0]["dev"]:
            keys = [k for k in runs[0]["dev"][split] if k not in ("total", "missing")]
            name = {"dev_matched": "mnli-m", "dev_mismatched": "mnli-mm"}.get(split, task)
            medians = [100 * statistics.median(run["dev"][split][k] for run in runs) for k in keys]
            rows.append({"task": name, "metric": "/".join(keys), "dev": medians,
                         "seeds": len(runs)})  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'task':<9} {'metric':<18} {'dev':>12}  seeds"]
    for row in rows:
        dev = "/".join(f"{v:.1f}" for v in row["dev"])
        lines.append(f"{row['task']:<9} {row['metric']:<18} {dev:>12}  {row['seeds']}")
    return "\n".join(lines)
