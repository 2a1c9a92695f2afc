"""Transformer-XL's contiguous batch streams: one token stream cut into `batch_size` parallel
streams, read `tgt_len` tokens at a time, so that memories can carry from one segment to the next.

As kimiyoung/transformer-xl pytorch/data_utils.py, LMOrderedIterator (get_batch, get_fixlen_iter):
  - the stream of N tokens is trimmed to n_step * B tokens (n_step = N // B; the last N % B tokens
    are dropped) and cut into B contiguous rows: row r holds tokens r * n_step onwards;
  - segment k covers positions i = k * tgt_len .. i + T - 1 of every row, T = min(tgt_len,
    n_step - 1 - i): the last segment is shorter when tgt_len does not divide n_step - 1;
  - the inputs reach back `ext_len` tokens before i (extended context without memory), and the
    targets are the inputs shifted by one: the token at i + t + 1 for position i + t;
  - so row r of segment k + 1 continues row r of segment k exactly: a model may keep row r's
    hidden states as memory. Every token of a row but its first is a target exactly once.
The reference is time-major (T, B); batches here are batch-first (B, T) like the rest of
muppets, and labels are aligned with input_ids (IGNORE_INDEX on the ext_len context positions).
Not built: get_varlen_iter (random segment lengths around tgt_len) and LMShuffledIterator.

The stream: `ShardStream` reads the documents of a `muppets prepare` shards directory in corpus
order without loading them (memory-mapped), with an optional `eos_id` after every document (the
reference appends <eos> to every line of WikiText); `ArrayStream` wraps ids already in memory.

Batch keys (B = batch_size / world_size rows of this rank, e = min(ext_len, i)):
    input_ids   (B, e + T)  int64
    labels      (B, e + T)  int64 next token, IGNORE_INDEX on the first e positions
    new_stream  ()          bool, True on segment 0: memories from before belong to another text
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from muppets.data.shards import ShardedCorpus
from muppets.errors import ConfigError, InputError

IGNORE_INDEX = -100


class TokenStream(Protocol):
    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> np.ndarray:
        """int64 tokens start .. stop - 1 of the stream."""
        ...

    def sentence_parity(self, start: int, stop: int) -> np.ndarray:
        """bool, flipping at every sentence start: XLNet's `sent_ids` (data_utils.py)."""
        ...


class ArrayStream:
    """Ids already in memory (a list, an array or a 1-D tensor); `sentence_ids` (the same length,
    any values; a change of value starts a sentence) default to one sentence."""

    def __init__(self, ids, sentence_ids=None):
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if sentence_ids is None:
            self.parity = np.zeros(len(self.ids), dtype=bool)
        else:
            changes = np.diff(np.asarray(sentence_ids).reshape(-1)) != 0
            self.parity = np.concatenate([[0], np.cumsum(changes)]).astype(np.int64) % 2 == 1

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self.ids[start:stop]

    def sentence_parity(self, start: int, stop: int) -> np.ndarray:
        return self.parity[start:stop]


class ShardStream:
    """Every document of a shards directory in order, `eos_id` after each one when given.

    Sentence parity flips at every sentence and at every eos token (XLNet's use_eod: the <eod>
    line is a sentence of its own)."""

    def __init__(self, corpus: ShardedCorpus, eos_id: int | None = None):
        self.eos_id = eos_id
        self.shards = corpus.shards
        self._doc_ends, self._unit_ends = [], []  # per shard, in stream positions of the shard
        for shard in self.shards:
            docs = shard.document_offsets
            token_ends = shard.sentence_offsets[docs[1:]]  # (D,)
            sentence_ends = shard.sentence_offsets[1:]  # (S,)
            if eos_id is None:
                doc_ends, units = token_ends, sentence_ends
            else:  # d eos tokens come before document d
                doc_ends = token_ends + np.arange(1, len(token_ends) + 1)
                doc_of_sentence = np.searchsorted(docs[1:], np.arange(len(sentence_ends)), "right")
                units = np.sort(np.concatenate([sentence_ends + doc_of_sentence, doc_ends]))
            self._doc_ends.append(np.asarray(doc_ends, dtype=np.int64))
            self._unit_ends.append(np.asarray(units, dtype=np.int64))
        lengths = [int(ends[-1]) if len(ends) else 0 for ends in self._doc_ends]
        self._starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])  # (shards + 1,)
        self._units_before = np.cumsum([0] + [len(u) for u in self._unit_ends])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _gather(self, start: int, stop: int, local, dtype) -> np.ndarray:
        pieces = []
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for k in range(max(first, 0), len(self.shards)):
            base = int(self._starts[k])
            lo, hi = max(start, base), min(stop, int(self._starts[k + 1]))
            if lo >= stop:
                break
            if lo < hi:
                pieces.append(local(k, np.arange(lo - base, hi - base)))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype)

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self._gather(start, stop, self._tokens, np.int64)

    def sentence_parity(self, start: int, stop: int) -> np.ndarray:
        return self._gather(start, stop, self._parity, bool)

    def _tokens(self, k: int, q: np.ndarray) -> np.ndarray:
        tokens = self.shards[k].tokens
        if self.eos_id is None:
            return tokens[q[0] : q[-1] + 1].astype(np.int64)
        ends = self._doc_ends[k]
        d = np.searchsorted(ends, q, side="right")  # (n,) document of each position
        is_eos = q == ends[d] - 1
        index = np.minimum(q - d, len(tokens) - 1)  # d documents' eos tokens come before q
        return np.where(is_eos, self.eos_id, tokens[index].astype(np.int64))

    def _parity(self, k: int, q: np.ndarray) -> np.ndarray:
        unit = np.searchsorted(self._unit_ends[k], q, side="right") + self._units_before[k]
        return unit % 2 == 1


class OrderedSegments:
    """The segments of one pass over a stream, in order (LMOrderedIterator), for one rank.

    Rank r of W takes rows r * B / W .. (r + 1) * B / W - 1 of every segment, so the ranks'
    rows are disjoint and together the whole batch.
    """

    def __init__(
        self,
        stream: TokenStream,
        batch_size: int,
        tgt_len: int,
        ext_len: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1 or tgt_len < 1:
            raise ConfigError(f"batch_size ({batch_size}) and tgt_len ({tgt_len}) must be >= 1")
        if ext_len < 0:
            raise ConfigError(f"ext_len must be >= 0, got {ext_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ConfigError(
                f"batch_size ({batch_size}) must be a multiple of the number of processes "
                f"({world_size}): every process reads whole streams"
            )
        self.stream, self.batch_size = stream, batch_size
        self.tgt_len, self.ext_len = tgt_len, ext_len
        self.n_step = len(stream) // batch_size  # tokens per row
        if self.n_step < 2:
            raise InputError(
                f"{len(stream)} tokens are too few for batch_size {batch_size}: every stream "
                "needs at least 2 tokens (an input and its next token)"
            )
        per_rank = batch_size // world_size
        self.rows = range(rank * per_rank, (rank + 1) * per_rank)

    def __len__(self) -> int:
        """get_fixlen_iter's count: positions 0 .. n_step - 2 in steps of tgt_len."""
        return -(-(self.n_step - 1) // self.tgt_len)

    def segment(self, k: int) -> dict[str, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"segment {k} out of range for {len(self)} segments")
        i = k * self.tgt_len
        T = min(self.tgt_len, self.n_step - 1 - i)  # get_batch's seq_len
        beg = max(0, i - self.ext_len)
        # (B, e + T + 1): inputs beg .. i + T - 1 and one more token for the last target
        rows = [
            self.stream.slice(r * self.n_step + beg, r * self.n_step + i + T + 1) for r in self.rows
        ]
        window = torch.from_numpy(np.stack(rows))
        labels = window[:, 1:].clone()
        labels[:, : i - beg] = IGNORE_INDEX  # ext_len context: seen, not predicted
        return {
            "input_ids": window[:, :-1].contiguous(),
            "labels": labels,
            "new_stream": torch.tensor(k == 0),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (self.segment(k) for k in range(len(self)))

    def predicted(self) -> np.ndarray:
        """(len(stream),) bool: the tokens this rank's segments predict (each row's but its
        first), e.g. to count the words behind a per-word perplexity (wikitext.py)."""
        mask = np.zeros(len(self.stream), dtype=bool)
        for r in self.rows:
            mask[r * self.n_step + 1 : (r + 1) * self.n_step] = True
        return mask


class SegmentBatches:
    """Endless, resumable training segments: pass after pass over the same streams.

    state_dict() = {"epoch", "segment"}: the next segment to yield, the same on every rank.
    """

    def __init__(self, segments: OrderedSegments):
        self.segments = segments
        self.epoch, self.position = 0, 0

    def __iter__(self) -> SegmentBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = self.segments.segment(self.position)
        self.position += 1
        if self.position == len(self.segments):
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "segment": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, position = int(state["epoch"]), int(state["segment"])
        if not 0 <= position < len(self.segments):
            raise InputError(
                f"the saved data position (segment {position}) is past this stream's "
                f"{len(self.segments)} segments: the data or batch_size / tgt_len changed"
            )
        self.epoch, self.position = epoch, position
