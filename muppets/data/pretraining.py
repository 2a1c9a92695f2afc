"""Pretraining batches from token shards: a resumable, rank-aware source of masked micro-batches.

Why partitions: the corpus is cut into `partitions` fixed parts (document d belongs to part
d % partitions). Every optimizer step takes `batch_size / partitions` instances from every part;
rank r of W reads and builds only the parts p with p % W == r. The global batch of a step is
therefore the same whatever the number of processes (any W dividing `partitions`), which makes
N processes equal one process with the same global batch, and lets a run resume on a different
number of processes.

Why the position is a step count: each part emits exactly the same number of instances per step,
so the data position is (steps done, micro-batches done in the current step), the same on every
rank. Resuming rebuilds the instance order from the seed and skips what was consumed; skipping
only pairs sentences (masks are drawn from per-instance generators), so it is cheap.

Static vs dynamic (Devlin et al. §3.1; RoBERTa §4.1): with static masking, epoch e is built
from the generators of epoch e % dupe_factor, so the same pairs and masks come back every
`dupe_factor` epochs, as google's create_pretraining_data with dupe_factor copies; with dynamic
masking every epoch gets new generators: a new mask every time a sequence is seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from muppets.data.batching import collate
from muppets.data.instances import (
    Instance,
    create_nsp_instances,
    create_sop_instances,
    pack_full_sentences,
)
from muppets.data.masking import MaskingConfig, mask_spans, mask_tokens, mask_whole_words
from muppets.data.ngram_masking import mask_ngrams
from muppets.data.unit_masking import mask_units, unit_view
from muppets.errors import ConfigError, InputError

INSTANCE_KINDS = ("nsp", "sop", "full_sentences")
MASKINGS = ("token", "whole_word", "span", "ngram", "phrase", "entity")
_CHUNK_DOCUMENTS = 256  # instances of this many documents are shuffled together


@dataclass(frozen=True)
class PretrainingDataConfig:
    kind: str = "nsp"  # nsp (BERT), sop (ALBERT), full_sentences (RoBERTa)
    masking: str = "token"  # token, whole_word, span (SpanBERT), ngram (ALBERT), phrase, entity
    dynamic_masking: bool = False
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10
    batch_size: int = 128  # global instances per optimizer step
    micro_batch_size: int = 32  # instances per forward/backward on one rank
    partitions: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.kind not in INSTANCE_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(INSTANCE_KINDS)}, got {self.kind!r}")
        if self.masking not in MASKINGS:
            raise ConfigError(f"masking must be one of {', '.join(MASKINGS)}, got {self.masking!r}")
        if self.batch_size % self.partitions:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of partitions "
                f"({self.partitions})"
            )
        if self.dupe_factor < 1:
            raise ConfigError(f"dupe_factor must be >= 1, got {self.dupe_factor}")

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank."""
        if self.partitions % world_size:
            raise ConfigError(
                f"partitions ({self.partitions}) must be a multiple of the number of "
                f"processes ({world_size})"
            )
        per_rank = self.batch_size // world_size
        if per_rank % self.micro_batch_size:
            raise ConfigError(
                f"batch_size / processes ({per_rank}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        return per_rank // self.micro_batch_size


@dataclass(frozen=True)
class SpecialIds:
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    vocab_size: int


class _Part(Sequence):
    """Documents part, part + n, part + 2n, ... of a corpus, in the order `order` gives."""

    def __init__(self, corpus: Sequence, indices: np.ndarray):
        self.corpus, self.indices = corpus, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.corpus[int(self.indices[i])]


def _row_masker(config: PretrainingDataConfig, ids: SpecialIds, continuation: np.ndarray | None):
    masking = MaskingConfig(
        vocab_size=ids.vocab_size,
        mask_id=ids.mask_id,
        special_ids=(ids.pad_id, ids.cls_id, ids.sep_id),
        masked_lm_prob=config.masked_lm_prob,
        max_predictions_per_seq=config.max_predictions_per_seq,
    )
    if config.masking == "token":
        return partial(mask_tokens, config=masking)
    if continuation is None:
        raise ConfigError(f"masking '{config.masking}' needs the tokenizer's continuation mask")
    maskers = {"whole_word": mask_whole_words, "span": mask_spans, "ngram": mask_ngrams}
    masker = maskers.get(config.masking, mask_units)  # phrase, entity: ERNIE (unit_masking.py)
    return partial(masker, config=masking, continuation=continuation)


def _generation(config: PretrainingDataConfig, epoch: int) -> int:
    """Which epoch's generators epoch `epoch` uses: itself (dynamic) or epoch % dupe_factor."""
    return epoch if config.dynamic_masking else epoch % config.dupe_factor


def part_instances(
    corpus: Sequence, part: int, config: PretrainingDataConfig, ids: SpecialIds
) -> Iterator[tuple[int, int, Instance]]:
    """Endless (epoch, index in epoch, unmasked instance) of one part, epoch after epoch."""
    members = np.arange(part, len(corpus), config.partitions)
    if len(members) < 2:
        raise ConfigError(
            f"part {part} of {config.partitions} has {len(members)} documents; use fewer "
            "partitions or a larger corpus"
        )
    epoch = 0
    while True:
        rng = np.random.default_rng([config.seed, part, _generation(config, epoch)])
        documents = _Part(corpus, rng.permutation(members))  # a new document order every epoch
        index = 0
        if config.kind == "full_sentences":
            for instance in pack_full_sentences(
                documents,
                max_seq_length=config.max_seq_length,
                cls_id=ids.cls_id,
                sep_id=ids.sep_id,
            ):
                yield epoch, index, instance
                index += 1
        else:
            create = create_nsp_instances if config.kind == "nsp" else create_sop_instances
            for start in range(0, len(documents), _CHUNK_DOCUMENTS):
                chunk: list[Instance] = []
                for d in range(start, min(start + _CHUNK_DOCUMENTS, len(documents))):
                    chunk += create(
                        documents,
                        d,
                        rng,
                        max_seq_length=config.max_seq_length,
                        cls_id=ids.cls_id,
                        sep_id=ids.sep_id,
                        short_seq_prob=config.short_seq_prob,
                    )
                for k in rng.permutation(len(chunk)):  # neighbours are not from one document
                    yield epoch, index, chunk[k]
                    index += 1
        if index == 0:  # every pass is like this one: looping on would spin without an end
            raise _no_instances(corpus, part, len(members), config)
        epoch += 1


def _no_instances(corpus: Sequence, part: int, documents: int, config) -> InputError:
    why = "documents without tokens" if config.kind != "sop" else "each one sentence of one token"
    return InputError(
        f"part {part} of {config.partitions}: a pass over its {documents} documents gave no "
        f"{config.kind} instance ({why}?); check the corpus or use fewer partitions",
        getattr(corpus, "directory", None),  # a ShardedCorpus names its directory
    )


def mask_instance(
    mask: Callable, config: PretrainingDataConfig, part: int, epoch: int, index: int, instance
) -> Instance:
    """The instance with its masks, drawn from a generator of its own (see the module doc)."""
    rng = np.random.default_rng([config.seed, 1, part, _generation(config, epoch), index])
    tokens, lm_labels = mask(instance.tokens, rng)
    return dataclasses.replace(instance, tokens=tokens, lm_labels=lm_labels)


class PretrainingBatches:
    """Iterator of micro-batches (dicts of tensors) for one rank, with state_dict/load_state_dict.

    Step s takes the next `batch_size / partitions` instances of every part this rank owns, masks
    them, and cuts them into micro-batches of `micro_batch_size`.
    """

    def __init__(
        self,
        corpus: Sequence,
        config: PretrainingDataConfig,
        ids: SpecialIds,
        *,
        continuation: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.corpus, self.config, self.ids = unit_view(corpus, config.masking), config, ids
        self.accumulation = config.accumulation_steps(world_size)
        self.parts = list(range(rank, config.partitions, world_size))
        self.mask: Callable = _row_masker(config, ids, continuation)
        self.steps_done, self.micro_done = 0, 0
        self._restart()

    def _restart(self) -> None:
        self._streams = {
            p: part_instances(self.corpus, p, self.config, self.ids) for p in self.parts
        }
        self._block: list[dict[str, torch.Tensor]] = []
        for _ in range(self.steps_done):  # skip consumed steps: pairing only, no masking
            for p in self.parts:
                for _ in range(self.config.batch_size // self.config.partitions):
                    next(self._streams[p])

    def _next_block(self) -> list[dict[str, torch.Tensor]]:
        per_part = self.config.batch_size // self.config.partitions
        instances = [
            mask_instance(self.mask, self.config, p, *next(self._streams[p]))
            for p in self.parts
            for _ in range(per_part)
        ]
        m = self.config.micro_batch_size
        return [collate(instances[i : i + m], self.ids.pad_id) for i in range(0, len(instances), m)]

    def __iter__(self) -> PretrainingBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if not self._block:
            self._block = self._next_block()
            for _ in range(self.micro_done):  # resuming inside a step
                self._block.pop(0)
        batch = self._block.pop(0)
        self.micro_done += 1
        if self.micro_done == self.accumulation:
            self.steps_done, self.micro_done = self.steps_done + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"steps_done": self.steps_done, "micro_done": self.micro_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.steps_done, self.micro_done = int(state["steps_done"]), int(state["micro_done"])
        self._restart()


def evaluation_batches(
    corpus: Sequence,
    config: PretrainingDataConfig,
    ids: SpecialIds,
    *,
    continuation: np.ndarray | None = None,
    max_instances: int = 1024,
    rank: int = 0,
    world_size: int = 1,
) -> list[dict[str, torch.Tensor]]:
    """A fixed set of masked held-out micro-batches: the same every call (seeded, epoch 0).

    Held-out instances are the first `max_instances` of one pass (one partition: every document),
    rank r keeping micro-batches r, r + W, ...
    """
    eval_config = dataclasses.replace(config, partitions=1, batch_size=config.micro_batch_size)
    mask = _row_masker(config, ids, continuation)
    instances = []
    corpus = unit_view(corpus, config.masking)
    for epoch, index, instance in part_instances(corpus, 0, eval_config, ids):
        if epoch > 0 or index >= max_instances:
            break
        instances.append(mask_instance(mask, eval_config, 0, epoch, index, instance))
    m = config.micro_batch_size
    micro = [collate(instances[i : i + m], ids.pad_id) for i in range(0, len(instances), m)]
    return micro[rank::world_size]
