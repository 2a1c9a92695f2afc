"""Task examples as words, for the feature-based downstream models (tasks/features.py).

ELMo reads words (as characters), and the non-contextual baseline looks words up in its own
vocabulary, so these models see the words of a text, never WordPiece pieces:
- classification / regression: each text's words by the pretraining tokenizer (streams.py
  `tokenize_words`, Moses-like), or split on whitespace only for text that is tokenized already
  (GLUE's SST-2, whose "it 's" / "is n't" tokenize_words would cut once more);
- tagging: the CoNLL file's own words, one prediction per word, nothing truncated.

Batches are sortish by words (task_features.bucketed_batches: shuffle, sort mega-batches by
length, cut, shuffle the batches), so little padding is computed. What a batch holds is up to a
`collate(features) -> dict` function: word ids of a vocabulary, or ELMo's layers (training/).

Shapes:
    B  batch size      T  words of the longest sentence in the batch
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from muppets.data.masking import IGNORE_INDEX
from muppets.data.readers.conll import Sentence
from muppets.data.readers.tabular import Example
from muppets.data.streams import tokenize_words
from muppets.data.task_features import tag_ids
from muppets.errors import InputError
from muppets.tokenization.words import WordVocabulary


@dataclass(frozen=True, slots=True, eq=False)
class WordFeature:
    """One example as words: a sentence (or a pair) and its target."""

    example: int  # index of the example in the list it was made from
    words: tuple[str, ...]
    words_b: tuple[str, ...] | None = None  # the second text of a pair
    label: int | float | None = None  # classification id / regression score; None: unlabelled
    tags: np.ndarray | None = None  # tagging: (n,) tag ids, one per word

    def __len__(self) -> int:
        return max(len(self.words), len(self.words_b or ()))


def word_features(
    examples: Sequence[Example | Sentence],
    tagging: bool = False,
    labels: Sequence[str] | None = None,
    whitespace_tokens: bool = False,
) -> list[WordFeature]:
    """WordFeatures of tabular examples, or (tagging) of CoNLL sentences with their tag ids
    (an unknown tag is an InputError at its line). A text without words stays empty."""
    if tagging:
        out = []
        for n, sentence in enumerate(examples):
            tags = None if labels is None else np.asarray(tag_ids(sentence, labels), np.int64)
            out.append(WordFeature(n, tuple(sentence.words), tags=tags))
        return out

    def split(text: str) -> tuple[str, ...]:
        return tuple(text.split() if whitespace_tokens else tokenize_words(text))

    return [
        WordFeature(n, split(e.text_a), None if e.text_b is None else split(e.text_b), e.label)
        for n, e in enumerate(examples)
    ]


def sentences_of(features: Sequence[WordFeature]) -> Iterator[tuple[str, ...]]:
    """Every text of the features: a pair gives two."""
    for feature in features:
        yield feature.words
        if feature.words_b is not None:
            yield feature.words_b


def word_id_batch(
    sentences: Sequence[Sequence[str]], vocabulary: WordVocabulary
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, T) int64, mask (B, T) bool), right-padded with the vocabulary's <PAD>; unknown
    words are <UNK>. T >= 1, so a batch of empty texts still has a (masked) position."""
    if vocabulary.pad_id is None:
        raise InputError("the word vocabulary has no <PAD> token")
    T = max([1, *(len(s) for s in sentences)])
    ids = torch.full((len(sentences), T), vocabulary.pad_id, dtype=torch.long)
    mask = torch.zeros(len(sentences), T, dtype=torch.bool)
    for b, words in enumerate(sentences):
        if words:
            ids[b, : len(words)] = torch.tensor([vocabulary.token_to_id(w) for w in words])
            mask[b, : len(words)] = True
    return ids, mask


def target_batch(features: Sequence[WordFeature]) -> dict[str, torch.Tensor]:
    """{"labels": (B,) ids (float scores: regression) or, tagging, (B, T) tag ids with -100 at
    padding, T = max(1, longest sentence)}; {} when the features have no targets."""
    if features[0].tags is not None:
        T = max([1, *(len(f.tags) for f in features)])
        labels = torch.full((len(features), T), IGNORE_INDEX, dtype=torch.long)
        for b, f in enumerate(features):
            labels[b, : len(f.tags)] = torch.from_numpy(f.tags)
        return {"labels": labels}
    values = [f.label for f in features]
    if any(v is None for v in values):
        return {}
    if any(isinstance(v, float) for v in values):
        return {"labels": torch.tensor(values, dtype=torch.float32)}
    return {"labels": torch.tensor(values, dtype=torch.long)}
