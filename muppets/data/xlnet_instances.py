"""XLNet pretraining batches from a token stream: zihangdai/xlnet data_utils.py's create_tfrecords
and _split_a_and_b, then permutation.py's targets, order and masks.

  - the stream is cut into B contiguous rows (`batchify`), like Transformer-XL's (lm_streams.py);
  - step k, row r: the reuse part is row[i : i + reuse_len], i = k * reuse_len; A and B start at
    i + reuse_len (`_split_a_and_b`): A runs to a sentence boundary chosen uniformly among those
    before i + reuse_len + tot_len (tot_len = seq_len - reuse_len - 3); B continues A (is_next 1),
    or, half of the time or when there is no boundary, B is a stretch of whole sentences drawn
    anywhere in the row (is_next 0, A then runs to the first boundary at or after tot_len); the
    longer side is cut, token by token, until A and B hold tot_len tokens together;
  - step k + 1's reuse part starts where step k's ends, so the hidden states of a row's reuse
    part are the right memory for the row's next instance (`new_stream` marks step 0).
A row stops yielding when an instance would pass its end: a pass has (n_step - seq_len) //
reuse_len + 1 steps. Every (seed, epoch, step, row) draws its own torch.Generator, so a pass is
the same whatever the number of processes and a resumed run replays it exactly; every epoch
draws new pairs, targets and orders over the same rows (the reference's pass_id).
bi_data (create_tfrecords with bi_data): the stream is cut into B / 2 rows, and each process's
batch is its forward rows followed by the same rows read backwards (the reference does this per
core), where spans are drawn in text order (`_sample_mask(reverse=True)`); the model then uses
backward relative positions for the second half of the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from muppets.data.lm_streams import TokenStream
from muppets.data.permutation import (
    PermutationConfig,
    assemble,
    collate_permutation,
    permutation_instance,
)
from muppets.errors import ConfigError, InputError


class _Row:
    """Row r of the stream: tokens r * n_step .. (r + 1) * n_step - 1, read on demand; read
    from its end when `backward` (bi_data)."""

    def __init__(self, stream: TokenStream, offset: int, length: int, backward: bool = False):
        self.stream, self.offset, self.length, self.backward = stream, offset, length, backward

    def _span(self, a: int, b: int) -> tuple[int, int]:
        if self.backward:
            a, b = self.length - b, self.length - a
        return self.offset + a, self.offset + b

    def tokens(self, a: int, b: int) -> np.ndarray:
        tokens = self.stream.slice(*self._span(a, b))
        return tokens[::-1].copy() if self.backward else tokens

    def parity(self, a: int, b: int) -> np.ndarray:
        parity = self.stream.sentence_parity(*self._span(a, b))
        return parity[::-1].copy() if self.backward else parity

    def boundaries(self, a: int, b: int) -> np.ndarray:
        """Positions q in (a, b) where a sentence starts (parity[q] != parity[q - 1])."""
        p = self.parity(a, b)
        return np.flatnonzero(p[1:] != p[:-1]) + a + 1

    def next_boundary(self, p: int, stop: int) -> int:
        """The first q in [p, stop) where a sentence starts, else stop (read in growing chunks)."""
        step = 64
        while p < stop:
            found = self.boundaries(p - 1, min(stop, p + step))
            if len(found):
                return int(found[0])
            p, step = min(stop, p + step), step * 2
        return stop

    def sentence_start(self, p: int) -> int:
        """The largest q <= p where a sentence starts, else 0 (read backwards in growing chunks)."""
        step, hi = 64, p + 1
        while True:
            lo = max(0, hi - 1 - step)
            found = self.boundaries(lo, hi)  # q in (lo, hi): lo < q <= p
            if len(found):
                return int(found[-1])
            if lo == 0:
                return 0
            hi, step = lo + 1, step * 2


def split_a_and_b(
    row: _Row, begin: int, tot_len: int, generator: torch.Generator
) -> tuple[int, int, int, int, int]:
    """(a_begin, a_end, b_begin, b_end, is_next) of `_split_a_and_b` (module docstring)."""
    cuts = row.boundaries(begin, begin + tot_len).tolist()  # boundaries q - begin < tot_len
    end = row.next_boundary(begin + tot_len, row.length)
    a_begin = begin
    if not cuts or float(torch.rand(1, generator=generator)) < 0.5:
        is_next = 0
        a_end = end if not cuts else cuts[int(torch.randint(len(cuts), (1,), generator=generator))]
        b_len = max(1, tot_len - (a_end - a_begin))
        # randint(0, data_len - 1 - b_len), inclusive; then out to whole sentences
        b_begin = int(torch.randint(row.length - b_len, (1,), generator=generator))
        b_end = b_begin + b_len
        b_begin = row.sentence_start(b_begin)
        b_end = row.next_boundary(b_end, row.length - 1)
    else:
        is_next = 1
        a_end = cuts[int(torch.randint(len(cuts), (1,), generator=generator))]
        b_begin, b_end = a_end, end
    while (a_end - a_begin) + (b_end - b_begin) > tot_len:  # cut the longer side
        if a_end - a_begin > b_end - b_begin:
            a_end -= 1
        else:
            b_end -= 1
    return a_begin, a_end, b_begin, b_end, is_next


def instance_generator(seed: int, epoch: int, step: int, row: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, step, row]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class XLNetBatches:
    """Endless, resumable XLNet pretraining batches over a stream (module docstring).

    `batch_size` rows in all; rank r of W builds rows r * B / W .. (r + 1) * B / W - 1 (with
    bi_data: forward rows r * B / 2W .. (r + 1) * B / 2W - 1, then the same rows backwards).
    `continuation` (vocab_size,) bool marks pieces that continue a word (spans start at words).
    state_dict() = {"epoch", "step"}. Keys: permutation_instance's, stacked, plus seg_id,
    attention_mask (B, L), is_next (B,) and new_stream (); input_ids and token_type_ids are
    input_k and seg_id under the names the models take.
    """

    def __init__(
        self,
        stream: TokenStream,
        config: PermutationConfig,
        batch_size: int,
        *,
        sep_id: int,
        cls_id: int,
        pad_id: int,
        continuation: np.ndarray | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        bi_data: bool = False,
    ):
        ways = world_size * (2 if bi_data else 1)
        if batch_size < 1 or batch_size % ways or not 0 <= rank < world_size:
            twice = "2 x " if bi_data else ""
            raise ConfigError(
                f"batch_size ({batch_size}) must be a positive multiple of {twice}the number of "
                f"processes ({world_size}){' with bi_data' if bi_data else ''}, and rank "
                f"{rank} in [0, {world_size})"
            )
        if config.reuse_len < 1:
            raise ConfigError("reuse_len must be >= 1 for stream instances: it is the step")
        self.stream, self.config, self.batch_size = stream, config, batch_size
        self.ids = {"sep_id": sep_id, "cls_id": cls_id}
        self.pad_id, self.continuation, self.seed = pad_id, continuation, seed
        stream_rows = batch_size // 2 if bi_data else batch_size
        self.n_step = len(stream) // stream_rows
        if self.n_step < config.seq_len:
            raise InputError(
                f"{len(stream)} tokens are too few for {stream_rows} rows of at least "
                f"seq_len {config.seq_len} tokens (batch_size {batch_size})"
            )
        per_rank = stream_rows // world_size
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        # (stream row, backward, row of the global batch: it seeds the instance's generator)
        self.rows = [(r, False, r) for r in mine]
        if bi_data:
            self.rows += [(r, True, stream_rows + r) for r in mine]
        self.epoch, self.step = 0, 0

    def __len__(self) -> int:
        return (self.n_step - self.config.seq_len) // self.config.reuse_len + 1

    def instance(
        self, epoch: int, step: int, r: int, backward: bool = False, index: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Stream row r's instance at `step` (read backwards when `backward`); `index`: its row
        in the global batch (default r), which seeds its generator."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} out of range for {len(self)} steps")
        config = self.config
        g = instance_generator(self.seed, epoch, step, r if index is None else index)
        row = _Row(self.stream, r * self.n_step, self.n_step, backward)
        i = step * config.reuse_len
        begin = i + config.reuse_len
        a0, a1, b0, b1, is_next = split_a_and_b(row, begin, config.rest - 3, g)
        parts = assemble(
            row.tokens(i, begin),
            row.tokens(a0, a1),
            row.tokens(b0, b1),
            config,
            pad_id=self.pad_id,
            **self.ids,
        )
        ids = parts["input_ids"]
        is_start = None if self.continuation is None else ~torch.from_numpy(self.continuation)[ids]
        built = permutation_instance(
            ids,
            config,
            g,
            attention_mask=parts["attention_mask"],
            is_start=is_start,
            reverse=backward,
            **self.ids,
        )
        built.update(seg_id=parts["seg_id"], attention_mask=parts["attention_mask"])
        built["is_next"] = torch.tensor(is_next)
        return built

    def batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        rows = [self.instance(epoch, step, r, back, index) for r, back, index in self.rows]
        batch = collate_permutation(rows)
        batch["new_stream"] = torch.tensor(step == 0)
        # the names models/xlnet.py and transformers take (the same tensors)
        batch["input_ids"], batch["token_type_ids"] = batch["input_k"], batch["seg_id"]
        return batch

    def __iter__(self) -> XLNetBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = self.batch(self.epoch, self.step)
        self.step += 1
        if self.step == len(self):
            self.epoch, self.step = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, step = int(state["epoch"]), int(state["step"])
        if not 0 <= step < len(self):
            raise InputError(
                f"the saved data position (step {step}) is past this stream's {len(self)} "
                "steps: the data, batch_size, seq_len or reuse_len changed"
            )
        self.epoch, self.step = epoch, step
