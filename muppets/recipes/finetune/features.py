"""`muppets finetune --downstream bilstm|bag-of-embeddings`: frozen ELMo features, or trainable
random word embeddings (the baseline), under a small task model -> train() -> the best on dev.

Peters et al. 2018 (https://arxiv.org/abs/1802.05365) section 3.3: the biLM is frozen and a task
learns ELMo = gamma * sum_j softmax(s)_j * h_j (one ScalarMix, s and gamma trained) as the input of
its own model; by default ELMo is the whole input (no word vectors beside it). The models
(tasks/features.py): a biLSTM whose final states feed a softmax, or an averaged-embedding "neural
bag of words", for single texts and pairs ([u; v; |u - v|; u * v]); for NER a biLSTM tagger, or
(bag-of-embeddings) a softmax over each word's own features, so that all its context is ELMo's.
`--model random-embeddings` swaps the biLM for an embedding table over the training split's
words (<UNK> below --min-count), trained from a random start: the non-contextual baseline of the
same models. --elmo-word-embeddings feeds [x_k; ELMo_k] instead (section 3.3): that baseline's
embedding (vocabulary, --embedding-dim) trained beside the mix of the frozen biLM.

The biLM never enters the task model: it runs under no_grad on <S> words </S>, and its L + 1
layers reach FrozenFeatures through PrecomputedLayers. When the layers of every train and dev
sentence fit in --feature-cache-mb they are computed once, before the first seed, and read from
memory in every epoch; otherwise the biLM runs on each batch. Same words, same numbers, up to float
rounding. Words, not WordPiece: data/word_features.py.

Options: --downstream-learning-rate (Adam, 1e-3; --learning-rate is the encoder fine-tuning rate
and is refused here), --downstream-hidden-size, --downstream-dropout, --embedding-dim,
--min-count, --whitespace-tokens. Shared with BERT runs: epochs, batch sizes, warmup, weight decay,
clipping, evaluations, early stopping, seeds. --freeze is implied (accepted, changes nothing);
--tokenizer, --pooling, --max-seq-length and the QA options do not apply and are ignored.

Outputs, as BERT runs (finetune.py): <out>/seed-<s>/metrics.json ("score" = first dev split's
metric), metrics.jsonl, loss.png, dev_metric.png, the dev predictions, and summary.json with the
median over seeds. CoNLL runs read from --data also score the best model on the test file
(metrics.json "test"). config.json describes the model ("model_type": "downstream") and
model.safetensors holds the mix and the task model only (the biLM stays in --model);
word_vocab.txt is the word embedding's vocabulary. `muppets evaluate` / `predict` do not load them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from muppets.data.task_features import EpochBatches, bucketed_batches
from muppets.data.word_features import (
    WordFeature,
    sentences_of,
    target_batch,
    word_features,
    word_id_batch,
)
from muppets.errors import ConfigError, InputError
from muppets.tasks.classification import class_predictions
from muppets.tasks.downstream import (
    DOWNSTREAM,
    DownstreamObjective,
    ElmoWordFeatures,
    PrecomputedLayers,
    build_downstream,
    forward_batch,
)
from muppets.tasks.features import EmbeddingFeatures, FrozenFeatures
from muppets.tasks.prediction import numbers, write_predictions
from muppets.tasks.registry import GLUE, score, split_path, task_spec
from muppets.tasks.setup import TaskSetup
from muppets.tokenization.characters import batch_to_char_ids
from muppets.tokenization.words import WordVocabulary, build_word_vocabulary
from muppets.training import logging as log
from muppets.training.checkpoint import load_weights
from muppets.training.device import pick_device
from muppets.training.logging import plot_dev_scores
from muppets.training.loop import TrainConfig, train
from muppets.training.pretrained import WORD_VOCABULARY_FILE, load_elmo

RANDOM_EMBEDDINGS = "random-embeddings"  # --model value of the baseline
ELMO_AND_EMBEDDINGS = "elmo+embeddings"  # "features" of --elmo-word-embeddings


def check_downstream(config) -> None:
    """FinetuneConfig's rules for --downstream and --model random-embeddings."""
    if config.downstream is None:
        if config.model == RANDOM_EMBEDDINGS:
            raise ConfigError("--model random-embeddings is the baseline of --downstream: add "
                              f"--downstream {' or '.join(DOWNSTREAM)}")  # fmt: skip
        if config.elmo_word_embeddings:
            raise ConfigError("elmo_word_embeddings needs --downstream")
        return
    if config.elmo_word_embeddings and config.model == RANDOM_EMBEDDINGS:
        raise ConfigError("elmo_word_embeddings adds word embeddings to ELMo: --model must be an "
                          "ELMo checkpoint, not random-embeddings")  # fmt: skip
    if config.downstream not in DOWNSTREAM:
        raise ConfigError(
            f"unknown downstream {config.downstream!r}; valid: {', '.join(DOWNSTREAM)}"
        )
    for name in GLUE if config.task == "glue" else (config.task,):
        head = task_spec(name).head
        if head == "span_qa":
            raise ConfigError(f"--downstream has no model for {name} (extractive QA)")
    default = {f.name: f.default for f in dataclasses.fields(config)}["learning_rate"]
    if config.learning_rate != default:
        raise ConfigError("learning_rate is the encoder fine-tuning rate; with --downstream set "
                          "--downstream-learning-rate")  # fmt: skip
    rules = [
        ("downstream_learning_rate", config.downstream_learning_rate > 0, "> 0"),
        ("downstream_hidden_size", config.downstream_hidden_size >= 1, ">= 1"),
        ("downstream_dropout", 0 <= config.downstream_dropout < 1, "in [0, 1)"),
        ("embedding_dim", config.embedding_dim >= 1, ">= 1"),
        ("min_count", config.min_count >= 1, ">= 1"),
        ("feature_cache_mb", config.feature_cache_mb >= 0, ">= 0"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise ConfigError(f"{name} must be {rule}, got {getattr(config, name)!r}")


# ---------------------------------------------------------------- feature sources


class WordEmbeddings:
    """The baseline: word ids (B, T) of the training split's vocabulary."""

    kind = RANDOM_EMBEDDINGS

    def __init__(self, vocabulary: WordVocabulary, dim: int, min_count: int):
        self.vocabulary, self.dim, self.min_count = vocabulary, dim, min_count

    def features(self) -> nn.Module:
        return EmbeddingFeatures(len(self.vocabulary), self.dim, self.vocabulary.pad_id)

    def batch(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        return word_id_batch(sentences, self.vocabulary)

    def describe(self) -> dict:
        return {"vocab_size": len(self.vocabulary), "embedding_dim": self.dim,
                "min_count": self.min_count, "vocabulary": WORD_VOCABULARY_FILE}  # fmt: skip


class ElmoLayers:
    """A frozen biLM's L + 1 layers (B, J, T, D) of <S> words </S>, and their mask (B, T), from
    the cache or from the biLM; T >= 3, so no text is left without a position after the
    boundaries are removed."""

    kind = "elmo"

    def __init__(self, path: str, device: torch.device, batch_size: int):
        self.bilm, self.config, _ = load_elmo(path)  # eval mode: no dropout
        self.bilm.requires_grad_(False).to(device)
        self.path, self.device, self.batch_size = path, device, batch_size
        self.cache: dict[tuple[str, ...], Tensor] | None = None  # words -> (J, n + 2, D), CPU

    def features(self) -> nn.Module:
        encoder = PrecomputedLayers(self.config.num_layers, self.config.hidden_size)
        return FrozenFeatures(encoder, remove_boundaries=True)

    @torch.no_grad()
    def run(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        char_ids = batch_to_char_ids([list(s) for s in sentences])  # (B, T, C) with <S> </S>
        if char_ids.shape[1] < 3:
            char_ids = nn.functional.pad(char_ids, (0, 0, 0, 3 - char_ids.shape[1]))
        char_ids = char_ids.to(self.device)
        mask = char_ids.ne(0).any(-1)  # (B, T)
        return torch.stack(self.bilm(char_ids, mask), dim=1), mask  # (B, J, T, D)

    def batch(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        if self.cache is None or any(tuple(s) not in self.cache for s in sentences):
            return self.run(sentences)
        stored = [self.cache[tuple(s)] for s in sentences]
        J, D = stored[0].shape[0], stored[0].shape[2]
        T = max([3, *(h.shape[1] for h in stored)])
        layers = torch.zeros(len(stored), J, T, D)  # (B, J, T, D)
        mask = torch.zeros(len(stored), T, dtype=torch.bool)
        for b, h in enumerate(stored):
            layers[b, :, : h.shape[1]], mask[b, : h.shape[1]] = h, True
        return layers, mask

    def fill_cache(self, sentences: Sequence[tuple[str, ...]], budget_mb: int) -> str:
        """Cache the layers of these (distinct) sentences if they fit; says what it did."""
        J, D = self.config.num_layers + 1, self.config.hidden_size
        size_mb = sum(len(s) + 2 for s in sentences) * J * D * 4 / 2**20
        if size_mb > budget_mb:
            return (f"ELMo layers would take {size_mb:,.0f} MiB > feature_cache_mb={budget_mb}: "
                    "the biLM runs on every batch")  # fmt: skip
        cache = {}
        for indices in bucketed_batches([len(s) for s in sentences], self.batch_size):
            layers, mask = self.run([sentences[i] for i in indices])
            layers, lengths = layers.cpu(), mask.sum(dim=1).tolist()
            for b, i in enumerate(indices):
                cache[sentences[i]] = layers[b, :, : lengths[b]].clone()  # (J, n + 2, D)
        self.cache = cache
        return f"ELMo layers of {len(sentences):,} sentences cached ({size_mb:,.0f} MiB)"

    def describe(self) -> dict:
        return {"elmo": str(self.path), "elmo_config": self.config.to_dict(),
                "feature_dim": self.config.hidden_size, "layers": self.config.num_layers + 1,
                "feature_cache": self.cache is not None}  # fmt: skip


class ElmoWithWords:
    """[x_k; ELMo_k]: the biLM's layers with each word's id of the baseline's vocabulary packed
    in one extra layer (B, J + 1, T, D), as ElmoWordFeatures reads them; the mask is ELMo's."""

    kind = ELMO_AND_EMBEDDINGS

    def __init__(self, elmo: ElmoLayers, words: WordEmbeddings):
        self.elmo, self.words, self.vocabulary = elmo, words, words.vocabulary

    def features(self) -> nn.Module:
        return ElmoWordFeatures(self.elmo.features(), self.words.features())

    def batch(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        layers, mask = self.elmo.batch(sentences)  # (B, J, T, D), T = max(3, n + 2)
        ids, _ = self.words.batch(sentences)  # (B, max(1, n)), <PAD> after each sentence
        channel = torch.full_like(layers[:, 0], float(self.vocabulary.pad_id))  # (B, T, D)
        channel[:, 1 : 1 + ids.shape[1], 0] = ids.to(channel)  # word k sits at <S> + k
        return torch.cat([layers, channel.unsqueeze(1)], dim=1), mask  # (B, J + 1, T, D)

    def describe(self) -> dict:
        return {**self.elmo.describe(), **self.words.describe(),
                "feature_dim": self.words.dim + self.elmo.config.hidden_size}  # fmt: skip


class DownstreamData(NamedTuple):
    """A task read, turned into words and (ELMo) cached once, shared by its seeds."""

    setup: TaskSetup
    source: WordEmbeddings | ElmoLayers | ElmoWithWords
    train_examples: list
    train_features: list[WordFeature]
    evals: dict[str, tuple[list, list[WordFeature]]]  # dev splits (then "test") -> examples, words
    pairs: bool

    def collate(self, features: Sequence[WordFeature]) -> dict[str, Tensor]:
        inputs, mask = self.source.batch([f.words for f in features])
        batch = {"inputs": inputs, "attention_mask": mask}
        if self.pairs:
            inputs_b, mask_b = self.source.batch([f.words_b or () for f in features])
            batch.update(inputs_b=inputs_b, attention_mask_b=mask_b)
        return {**batch, **target_batch(features)}


def prepare_downstream(
    config, name: str, train_path: Path, dev_paths: dict[str, Path], labels: list[str]
) -> DownstreamData:
    """The task read, as words, and its feature source (ELMo: cached), once for every seed."""
    spec = task_spec(name)
    columns = vars(config.columns()) if spec.reader == "table" else {}
    setup = TaskSetup(task=name, head=spec.head, labels=labels, max_seq_length=0,
                      columns=columns)  # fmt: skip
    paths = dict(dev_paths)
    if spec.head == "tagging" and not config.dev_file and config.data:
        try:  # CoNLL: the best model on dev is also scored on test
            paths["test"] = split_path(spec, config.data, "test")
        except InputError:
            pass
    tagging = spec.head == "tagging"

    def words(examples: list) -> list[WordFeature]:
        return word_features(examples, tagging, labels if tagging else None,
                             config.whitespace_tokens)  # fmt: skip

    train_examples = setup.read(train_path, "train")
    train_features = words(train_examples)
    evals = {}
    for split, path in paths.items():
        examples = setup.read(path, spec.dev_splits[0] if split == "test" else split)
        evals[split] = (examples, words(examples))
    pairs = any(f.words_b is not None for f in train_features)
    source: WordEmbeddings | ElmoLayers | ElmoWithWords
    if config.model == RANDOM_EMBEDDINGS or config.elmo_word_embeddings:
        counts = Counter(w for s in sentences_of(train_features) for w in s)
        vocabulary = build_word_vocabulary(counts, config.min_count)
        source = WordEmbeddings(vocabulary, config.embedding_dim, config.min_count)
    if config.model != RANDOM_EMBEDDINGS:
        elmo = ElmoLayers(config.model, pick_device(config.device), config.eval_batch_size)
        everything = [train_features, *(f for _, f in evals.values())]
        distinct = list(dict.fromkeys(s for f in everything for s in sentences_of(f)))
        print(f"{name}: " + elmo.fill_cache(distinct, config.feature_cache_mb))
        source = ElmoWithWords(elmo, source) if config.elmo_word_embeddings else elmo
    return DownstreamData(setup, source, train_examples, train_features, evals, pairs)


# ---------------------------------------------------------------- one seed


@torch.no_grad()
def predict_words(model: nn.Module, data: DownstreamData, features: list[WordFeature],
                  batch_size: int):  # fmt: skip
    """Label ids / scores per example, or (tagging) a tag per word, batched by length."""
    head, labels = data.setup.head, data.setup.labels
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    outputs: list = [None] * len(features)
    for indices in bucketed_batches([len(f) for f in features], batch_size):
        batch = {k: v.to(device) for k, v in data.collate([features[i] for i in indices]).items()}
        logits = forward_batch(model, batch).float()  # (B, K) or (B, T, K)
        rows = (logits.argmax(-1) if head == "tagging" else class_predictions(logits)).cpu()
        for i, row in zip(indices, rows.numpy(), strict=True):
            n = len(features[i].words)
            outputs[i] = [labels[t] for t in row[:n]] if head == "tagging" else row
    model.train(was_training)
    if head == "tagging":
        return outputs
    return np.array(outputs).astype(float if head == "regression" else int)


def evaluate_split(model, data: DownstreamData, split: str, batch_size: int):
    examples, features = data.evals[split]
    predictions = predict_words(model, data, features, batch_size)
    return score(data.setup.spec, examples, predictions), predictions


def downstream_seed(config, data: DownstreamData, seed: int, run_dir: Path) -> dict:
    """One run: train the mix and the task model with dev evaluation, keep the best."""
    setup, spec = data.setup, data.setup.spec
    device = pick_device(config.device)
    torch.manual_seed(seed)  # the task model's initial weights
    model = build_downstream(config.downstream, spec.head, data.source.features(),
                             len(setup.labels), config.downstream_hidden_size,
                             config.downstream_dropout, data.pairs).to(device)  # fmt: skip
    batches = EpochBatches(
        data.train_features, config.batch_size, data.collate, seed, config.epochs
    )
    per_epoch = batches.steps_per_epoch
    train_config = TrainConfig(
        max_steps=config.epochs * per_epoch, learning_rate=config.downstream_learning_rate,
        warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
        adam_epsilon=config.adam_epsilon, max_grad_norm=config.max_grad_norm,
        log_every=min(config.log_every, per_epoch),
        eval_every=max(1, per_epoch // config.evals_per_epoch), save_every=0, keep_checkpoints=1,
        seed=seed, best_metric=spec.metric, early_stopping_patience=config.early_stopping_patience,
    )  # fmt: skip
    model_config = {
        "model_type": "downstream", "downstream": config.downstream, "head": spec.head,
        "features": data.source.kind, **data.source.describe(), "labels": setup.labels,
        "pairs": data.pairs, "hidden_size": config.downstream_hidden_size,
        "dropout": config.downstream_dropout, "whitespace_tokens": config.whitespace_tokens,
    }  # fmt: skip
    first = spec.dev_splits[0]

    def evaluate_fn(model: nn.Module) -> dict:
        return numbers(evaluate_split(model, data, first, config.eval_batch_size)[0])

    result = train(model, DownstreamObjective(spec.head), batches, train_config, run_dir,
                   config_dict=model_config, evaluate_fn=evaluate_fn)  # fmt: skip

    # The best model becomes the run directory; the training checkpoint goes.
    load_weights(model, run_dir / "best")
    for name in ("config.json", "model.safetensors"):
        (run_dir / "best" / name).replace(run_dir / name)
    shutil.rmtree(run_dir / "best")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if isinstance(data.source, (WordEmbeddings, ElmoWithWords)):
        data.source.vocabulary.save(run_dir / WORD_VOCABULARY_FILE)

    final = {}
    for split in data.evals:
        final[split], predictions = evaluate_split(model, data, split, config.eval_batch_size)
        if split == first:
            name = "dev_predictions.txt" if spec.head == "tagging" else "dev_predictions.tsv"
            write_predictions(setup, data.evals[split][0], predictions, run_dir / name)
    test = final.pop("test", None)
    history = log.eval_history(run_dir / "metrics.jsonl", per_epoch)
    best = result["best"]
    metrics = {
        "task": setup.task, "seed": seed, "metric": spec.metric,
        "score": final[first][spec.metric], "best_step": best["step"],
        "best_epoch": best["step"] / per_epoch, "dev": final, "history": history,
        "train_examples": len(data.train_examples), "train_features": len(data.train_features),
        "steps": result["step"], "stopped": result["stopped"], "freeze": True,
        "downstream": config.downstream, "features": data.source.kind,
        "train_loss": result["train_loss"], "elapsed_seconds": result["elapsed_seconds"],
    }  # fmt: skip
    if test is not None:
        metrics["test"] = test
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_dev_scores(history, spec.metric, run_dir / "dev_metric.png")
    print(f"{setup.task} seed {seed}: dev {spec.metric} {100 * metrics['score']:.2f} (best at "
          f"epoch {metrics['best_epoch']:.2f}, {result['stopped']})")  # fmt: skip
    if test is not None:
        print(f"{setup.task} seed {seed}: test {spec.metric} {100 * test[spec.metric]:.2f}")
    keys = ("score", "best_step", "best_epoch", "dev", "stopped", "test")
    return {k: metrics[k] for k in keys if k in metrics}
