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
--tokenizer, --pooling, --dropout, --max-seq-length and the QA options do not apply and are
ignored. The feature sources are training/feature_sources.py's; each seed runs through seeds.py,
as BERT runs do.

Outputs, as BERT runs (encoder.py): <out>/seed-<s>/metrics.json ("score" = first dev split's
metric), metrics.jsonl, loss.png, dev_metric.png, the dev predictions, and summary.json with the
median over seeds. CoNLL runs read from --data also score the best model on the test file
(metrics.json "test"). config.json describes the model ("model_type": "downstream") and
model.safetensors holds the mix and the task model only (the biLM stays in --model);
word_vocab.txt is the word embedding's vocabulary; task.json the task setup, as a BERT run's.
`muppets evaluate` / `predict` load them (training/downstream_model.py) over the same biLM.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

from torch import Tensor, nn

from muppets.data.word_features import WordFeature, sentences_of, word_features
from muppets.errors import ConfigError, InputError
from muppets.recipes.finetune.hyperparameters import candidates, resolved
from muppets.recipes.finetune.seeds import SeedParts, run_seed
from muppets.tasks.downstream import (
    DOWNSTREAM,
    DownstreamObjective,
    build_downstream,
)
from muppets.tasks.registry import GLUE, label_counts, score, split_path, task_spec
from muppets.tasks.setup import TaskSetup, save_task
from muppets.tokenization.words import build_word_vocabulary
from muppets.training.device import pick_device
from muppets.training.downstream_model import collate_words, predict_words
from muppets.training.feature_sources import (
    RANDOM_EMBEDDINGS,
    ElmoLayers,
    ElmoWithWords,
    WordEmbeddings,
)
from muppets.training.options import check, default_option
from muppets.training.pretrained import WORD_VOCABULARY_FILE


def check_downstream(config) -> None:
    """FinetuneConfig's rules for --downstream and --model random-embeddings."""
    if config.downstream is None:
        if config.model == RANDOM_EMBEDDINGS:
            valid = " or ".join(DOWNSTREAM)
            message = "--model random-embeddings is the baseline of --downstream: add"
            raise ConfigError(f"{message} --downstream {valid}")
        if config.elmo_word_embeddings:
            raise ConfigError("elmo_word_embeddings needs --downstream")
        return
    if config.elmo_word_embeddings and config.model == RANDOM_EMBEDDINGS:
        message = "elmo_word_embeddings adds word embeddings to ELMo: --model must be an ELMo"
        raise ConfigError(f"{message} checkpoint, not random-embeddings")
    if config.downstream not in DOWNSTREAM:
        raise ConfigError(
            f"unknown downstream {config.downstream!r}; valid: {', '.join(DOWNSTREAM)}"
        )
    for name in GLUE if config.task == "glue" else (config.task,):
        head = task_spec(name).head
        if head == "span_qa":
            raise ConfigError(f"--downstream has no model for {name} (extractive QA)")
    if config.optimization.learning_rate != default_option(type(config), "learning_rate"):
        message = "learning_rate is the encoder fine-tuning rate; with --downstream set"
        raise ConfigError(f"{message} --downstream-learning-rate")
    rules = [
        ("downstream_learning_rate", config.downstream_learning_rate > 0, "> 0"),
        ("downstream_hidden_size", config.downstream_hidden_size >= 1, ">= 1"),
        ("downstream_dropout", 0 <= config.downstream_dropout < 1, "in [0, 1)"),
        ("embedding_dim", config.embedding_dim >= 1, ">= 1"),
        ("min_count", config.min_count >= 1, ">= 1"),
        ("feature_cache_mb", config.feature_cache_mb >= 0, ">= 0"),
    ]
    check(config, rules)


class DownstreamData(NamedTuple):
    """A task read, turned into words and (ELMo) cached once, shared by its seeds."""

    setup: TaskSetup
    source: WordEmbeddings | ElmoLayers | ElmoWithWords
    train_examples: list
    train_features: list[WordFeature]
    evals: dict[str, tuple[list, list[WordFeature]]]  # dev splits (then "test") -> examples, words
    pairs: bool

    def collate(self, features: Sequence[WordFeature]) -> dict[str, Tensor]:
        return collate_words(self.source, self.pairs, features)


def prepare_downstream(
    config, name: str, train_path: Path, dev_paths: dict[str, Path], labels: list[str]
) -> DownstreamData:
    """The task read, as words, and its feature source (ELMo: cached), once for every seed."""
    spec = task_spec(name)
    columns = vars(config.columns()) if spec.reader == "table" else {}
    setup = TaskSetup(task=name, head=spec.head, labels=labels, max_seq_length=0, columns=columns)
    paths = dict(dev_paths)
    if spec.head == "tagging" and not config.dev_file and config.data:
        try:  # CoNLL: the best model on dev is also scored on test
            paths["test"] = split_path(spec, config.data, "test")
        except InputError:
            pass
    tagging = spec.head == "tagging"

    def words(examples: list) -> list[WordFeature]:
        tags = labels if tagging else None
        return word_features(examples, tagging, tags, config.whitespace_tokens)

    train_examples = setup.read(train_path, "train", errors=config.errors)
    train_features = words(train_examples)
    evals = {}
    for split, path in paths.items():
        split_name = spec.dev_splits[0] if split == "test" else split
        examples = setup.read(path, split_name, errors=config.errors)
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
    if spec.head == "classification":
        splits = {"train": train_examples, **{s: e for s, (e, _) in evals.items()}}
        print(f"{name}: " + label_counts(labels, splits))
    return DownstreamData(setup, source, train_examples, train_features, evals, pairs)


# ---------------------------------------------------------------- predictions and one seed


def evaluate_split(
    model, data: DownstreamData, split: str, batch_size: int, precision: str = "fp32"
):
    examples, features = data.evals[split]
    collate = data.collate
    predictions = predict_words(model, data.setup, collate, features, batch_size, precision)
    return score(data.setup.spec, examples, predictions), predictions


def downstream_parts(config, data: DownstreamData, seed: int) -> SeedParts:
    """The mix and the task model, built under the seed, as seeds.run_seed trains them."""
    setup, spec, device = data.setup, data.setup.spec, pick_device(config.device)
    precision = config.arithmetic.resolve(device)  # finetune() resolved (and printed) it
    model = build_downstream(
        config.downstream,
        spec.head,
        data.source.features(),
        len(setup.labels),
        config.downstream_hidden_size,
        config.downstream_dropout,
        data.pairs,
    ).to(device)
    model_config = {
        "model_type": "downstream",
        "downstream": config.downstream,
        "head": spec.head,
        "features": data.source.kind,
        **data.source.describe(),
        "labels": setup.labels,
        "pairs": data.pairs,
        "hidden_size": config.downstream_hidden_size,
        "dropout": config.downstream_dropout,
        "whitespace_tokens": config.whitespace_tokens,
    }

    def score(model: nn.Module, split: str):
        return evaluate_split(model, data, split, config.eval_batch_size, precision)

    def save(run_dir: Path) -> None:
        save_task(run_dir, setup)  # evaluate/predict load the run (training/downstream_model.py)
        if isinstance(data.source, (WordEmbeddings, ElmoWithWords)):
            data.source.vocabulary.save(run_dir / WORD_VOCABULARY_FILE)

    rate = config.downstream_learning_rate
    return SeedParts(
        setup=setup,
        model=model,
        objective=DownstreamObjective(spec.head),
        optimization=dataclasses.replace(config.optimization, learning_rate=rate),
        config_dict=model_config,
        train_examples=len(data.train_examples),
        train_features=data.train_features,
        collate=data.collate,
        examples={split: examples for split, (examples, _) in data.evals.items()},
        score=score,
        save=save,
        metrics={
            "freeze": True,
            "downstream": config.downstream,
            "features": data.source.kind,
        },
    )


def downstream_seed(config, data: DownstreamData, seed: int, run_dir: Path) -> dict:
    """One run of the task model over the features: seeds.run_seed with this path's parts."""
    config = resolved(config, candidates(config)[0])  # one value per option: the first
    return run_seed(config, partial(downstream_parts, config, data), seed, run_dir)
