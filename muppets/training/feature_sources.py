"""The feature sources of the frozen-feature path of `muppets finetune` (recipes/finetune/
features.py), which `evaluate` and `predict` build again (downstream_model.py). Each turns a batch
of word sequences into the inputs of its features module: word ids (the random-embeddings
baseline), a frozen biLM's layers (ELMo, cached in memory when they fit), or both
(--elmo-word-embeddings, Peters et al. 2018 section 3.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from muppets.data.task_features import bucketed_batches
from muppets.data.word_features import word_id_batch
from muppets.tasks.downstream import ElmoWordFeatures, PrecomputedLayers
from muppets.tasks.features import EmbeddingFeatures, FrozenFeatures
from muppets.tokenization.characters import batch_to_char_ids
from muppets.tokenization.words import WordVocabulary
from muppets.training.pretrained import WORD_VOCABULARY_FILE, load_elmo, resolve_checkpoint

RANDOM_EMBEDDINGS = "random-embeddings"  # --model value of the baseline
ELMO_AND_EMBEDDINGS = "elmo+embeddings"  # "features" of --elmo-word-embeddings


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
        return {
            "vocab_size": len(self.vocabulary),
            "embedding_dim": self.dim,
            "min_count": self.min_count,
            "vocabulary": WORD_VOCABULARY_FILE,
        }


class ElmoLayers:
    """A frozen biLM's L + 1 layers (B, J, T, D) of <S> words </S>, and their mask (B, T), from
    the cache or from the biLM; T >= 3, so no text is left without a position after the
    boundaries are removed."""

    kind = "elmo"

    def __init__(self, path: str, device: torch.device, batch_size: int):
        self.bilm, self.config, _ = load_elmo(path)  # eval mode: no dropout
        # the checkpoint itself, absolute: evaluate/predict load the same biLM from any directory
        self.checkpoint = resolve_checkpoint(path).resolve()
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
            too_big = f"ELMo layers would take {size_mb:,.0f} MiB > feature_cache_mb={budget_mb}"
            return too_big + ": the biLM runs on every batch"
        cache = {}
        for indices in bucketed_batches([len(s) for s in sentences], self.batch_size):
            layers, mask = self.run([sentences[i] for i in indices])
            layers, lengths = layers.cpu(), mask.sum(dim=1).tolist()
            for b, i in enumerate(indices):
                cache[sentences[i]] = layers[b, :, : lengths[b]].clone()  # (J, n + 2, D)
        self.cache = cache
        return f"ELMo layers of {len(sentences):,} sentences cached ({size_mb:,.0f} MiB)"

    def describe(self) -> dict:
        return {
            "elmo": str(self.path),
            "elmo_checkpoint": str(self.checkpoint),
            "elmo_config": self.config.to_dict(),
            "feature_dim": self.config.hidden_size,
            "layers": self.config.num_layers + 1,
            "feature_cache": self.cache is not None,
        }


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
        dim = self.words.dim + self.elmo.config.hidden_size
        return {**self.elmo.describe(), **self.words.describe(), "feature_dim": dim}
