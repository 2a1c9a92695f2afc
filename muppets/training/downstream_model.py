"""A `muppets finetune --downstream` model as `evaluate` and `predict` load it, and the one
prediction function that fine-tuning's dev scores and these commands share.

The run directory holds config.json ("model_type": "downstream": the task model's kind and sizes,
its feature source), model.safetensors (the mix and the task model only), task.json (the task
setup, as a BERT run's), and word_vocab.txt for the random-embeddings baseline. The frozen biLM
stays where fine-tuning read it: config.json names that checkpoint ("elmo_checkpoint", absolute)
and holds its config, which the biLM found there must still have.

Shapes:
    B  batch size    T  words of the longest text in the batch    K  labels
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from muppets.data.task_features import bucketed_batches
from muppets.data.word_features import WordFeature, target_batch, word_features
from muppets.errors import InputError
from muppets.tasks.classification import class_predictions
from muppets.tasks.downstream import build_downstream, forward_batch
from muppets.tasks.setup import TaskSetup, load_task
from muppets.tokenization.words import WordVocabulary
from muppets.training.checkpoint import CONFIG, load_weights, read_config
from muppets.training.feature_sources import (
    ELMO_AND_EMBEDDINGS,
    RANDOM_EMBEDDINGS,
    ElmoLayers,
    ElmoWithWords,
    WordEmbeddings,
)
from muppets.training.precision import autocast
from muppets.training.pretrained import WORD_VOCABULARY_FILE

NONFINITE = "outputs that are NaN or infinite: its weights are broken (a diverged checkpoint?)"

Source = WordEmbeddings | ElmoLayers | ElmoWithWords


def collate_words(
    source: Source, pairs: bool, features: Sequence[WordFeature]
) -> dict[str, Tensor]:
    """A batch of the source's inputs (and the second texts of pairs), with targets if any."""
    inputs, mask = source.batch([f.words for f in features])
    batch = {"inputs": inputs, "attention_mask": mask}
    if pairs:
        inputs_b, mask_b = source.batch([f.words_b or () for f in features])
        batch.update(inputs_b=inputs_b, attention_mask_b=mask_b)
    return {**batch, **target_batch(features)}


@torch.inference_mode()
def predict_words(
    model: nn.Module,
    setup: TaskSetup,
    collate: Callable[[Sequence[WordFeature]], dict[str, Tensor]],
    features: list[WordFeature],
    batch_size: int,
    precision: str = "fp32",
):
    """Label ids / scores per example, or (tagging) a tag per word, batched by length. Outputs
    that are NaN or infinite are refused (their argmax would be a label). `precision`: a
    resolved one (training/precision.py), which the task model runs in."""
    head, labels = setup.head, setup.labels
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    outputs: list = [None] * len(features)
    for indices in bucketed_batches([len(f) for f in features], batch_size):
        # the features as training collates them (outside autocast), the task model under it
        batch = {k: v.to(device) for k, v in collate([features[i] for i in indices]).items()}
        with autocast(precision, device):
            logits = forward_batch(model, batch).float()  # (B, K) or (B, T, K)
        if not torch.isfinite(logits).all():
            model.train(was_training)
            raise InputError(f"the model gives {NONFINITE}")
        rows = (logits.argmax(-1) if head == "tagging" else class_predictions(logits)).cpu()
        for i, row in zip(indices, rows.numpy(), strict=True):
            n = len(features[i].words)
            outputs[i] = [labels[t] for t in row[:n]] if head == "tagging" else row
    model.train(was_training)
    if head == "tagging":
        return outputs
    return np.array(outputs).astype(float if head == "regression" else int)


class DownstreamModel(NamedTuple):
    """A loaded downstream run: what predicting a file needs."""

    model: nn.Module  # eval mode, on its device
    setup: TaskSetup
    source: Source
    pairs: bool
    whitespace_tokens: bool

    def predict(self, examples: list, batch_size: int, precision: str = "fp32"):
        """Predictions of examples (labelled or not) in the form `write_predictions` takes."""
        tagging = self.setup.head == "tagging"
        features = word_features(examples, tagging, None, self.whitespace_tokens)
        collate = partial(collate_words, self.source, self.pairs)
        return predict_words(self.model, self.setup, collate, features, batch_size, precision)


def is_downstream(directory: str | Path) -> bool:
    """Whether a directory's config.json describes a --downstream model."""
    path = Path(directory) / CONFIG
    return path.is_file() and read_config(Path(directory)).get("model_type") == "downstream"


def load_downstream(
    directory: str | Path, device: torch.device, batch_size: int = 128
) -> DownstreamModel:
    """The task model with its weights, its setup and its feature source (the biLM it was
    trained over, checked against the config saved with it)."""
    directory = Path(directory)
    values = read_config(directory)
    where = directory / CONFIG
    try:
        kind, features = values["downstream"], values["features"]
        pairs, hidden, dropout = values["pairs"], values["hidden_size"], values["dropout"]
    except KeyError as e:
        raise InputError(f"a --downstream config without {e.args[0]!r}", where) from None
    setup = load_task(directory)
    if features in (RANDOM_EMBEDDINGS, ELMO_AND_EMBEDDINGS):
        vocabulary = WordVocabulary.load(directory / WORD_VOCABULARY_FILE)
        words = WordEmbeddings(vocabulary, values["embedding_dim"], values["min_count"])
    source: Source = words if features == RANDOM_EMBEDDINGS else _elmo(values, device, batch_size)
    if features == ELMO_AND_EMBEDDINGS:
        source = ElmoWithWords(source, words)
    model = build_downstream(
        kind, setup.head, source.features(), len(setup.labels), hidden, dropout, pairs
    )
    load_weights(model, directory)
    return DownstreamModel(
        model.to(device).eval(), setup, source, pairs, values.get("whitespace_tokens", False)
    )


def _elmo(values: dict, device: torch.device, batch_size: int) -> ElmoLayers:
    """The frozen biLM named in config.json; gone or changed is an InputError saying so."""
    checkpoint = values.get("elmo_checkpoint") or values.get("elmo")
    if not checkpoint or not (Path(checkpoint) / CONFIG).is_file():
        raise InputError(
            "the frozen biLM this model was trained over is not there any more "
            "(a --downstream model keeps only its task model: fine-tune it again)",
            checkpoint,
        )
    saved, found = values.get("elmo_config") or {}, read_config(Path(checkpoint))
    if any(found.get(key) != value for key, value in saved.items()):
        raise InputError(
            "this biLM's config differs from the one the --downstream model was trained over",
            Path(checkpoint) / CONFIG,
        )
    return ElmoLayers(checkpoint, device, batch_size)
