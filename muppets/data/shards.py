"""Tokenized, memory-mapped shards: a streaming writer and a `Sequence` reader.

A shards directory holds `manifest.json`, the tokenizer files, and per shard `shard-NNNNN-*.bin`:

    tokens     (T,)      uint16 if vocab_size <= 65536 else uint32: WordPiece ids, no special tokens
    sentences  (S + 1,)  int64: sentence s is tokens[sentences[s]:sentences[s + 1]]
    documents  (D + 1,)  int64: document d is sentences documents[d] .. documents[d + 1] - 1
    sources    (D, 2)    int64: (index into manifest["sources"], 1-based line) of each document
    units      (T,)      uint8, only when manifest["units"] names unit kinds (ERNIE masking):
                         bit k set = the token continues the unit of kind k of the token before
                         it (UNIT_BITS: 1 phrase, 2 entity); shards without it read as before

Offsets are local to their shard. Raw little-endian arrays (`<u2`, `<i8`), so any tool can
np.memmap them; the manifest gives the dtype and the counts, and the reader checks every file's
size against them.
The writer appends to open files and rolls over to a new shard at a document boundary, so memory
stays flat however large the corpus is.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from muppets.errors import InputError

FORMAT_NAME = "muppets-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = ("tokens", "sentences", "documents", "sources")
UNITS = "units"  # the optional fifth array
UNIT_BITS = {"phrase": 1, "entity": 2}
OFFSET = np.dtype("<i8")  # offsets and sources; little-endian on disk whatever the machine
_SHARD_FILE = re.compile(r"shard-\d{5}-(tokens|sentences|documents|sources|units)\.bin")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 halves the disk and page cache."""
    return np.dtype("<u2" if vocab_size <= 65536 else "<u4")  # .name: "uint16" / "uint32"


def shard_file(directory: str | Path, index: int, array: str) -> Path:
    return Path(directory) / f"shard-{index:05d}-{array}.bin"


class ShardWriter:
    """Appends batches of tokenized documents; closes a shard before it would pass `shard_tokens`.

    A document longer than `shard_tokens` gets a shard of its own; documents are never split.
    """

    def __init__(
        self, directory: str | Path, vocab_size: int, shard_tokens: int, units: bool = False
    ):
        self.directory = Path(directory)
        self.arrays = ARRAYS + (UNITS,) if units else ARRAYS  # units: write() takes `units`
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, int | str]] = []  # closed shards, for the manifest
        self._files: dict[str, Any] = {}

    def _open(self) -> None:
        index = len(self.shards)
        self._files = {a: open(shard_file(self.directory, index, a), "wb") for a in self.arrays}
        zero = np.zeros(1, OFFSET)
        self._files["sentences"].write(memoryview(zero))  # offsets start at 0
        self._files["documents"].write(memoryview(zero))
        self._counts = {"documents": 0, "sentences": 0, "tokens": 0}

    def _close(self) -> None:
        for f in self._files.values():
            f.close()
        name = f"shard-{len(self.shards):05d}"
        self.shards.append({"name": name, **self._counts})
        self._files = {}

    def write(
        self,
        tokens: np.ndarray,
        sentence_lengths: np.ndarray,
        document_sentences: np.ndarray,
        sources: np.ndarray,
        units: np.ndarray | None = None,
    ) -> None:
        """One batch of D documents: tokens (T,), sentence_lengths (S,), document_sentences (D,)
        (sentences per document), sources (D, 2), units (T,) uint8 when the writer has units.
        Every document must have >= 1 sentence."""
        sentence_ends = np.cumsum(sentence_lengths, dtype=np.int64)  # (S,) batch-local
        document_ends = np.cumsum(document_sentences, dtype=np.int64)  # (D,)
        document_token_ends = sentence_ends[document_ends - 1]  # (D,) tokens up to each doc
        d = 0  # next document of the batch to write
        while d < len(document_sentences):
            if not self._files:
                self._open()
            # Take documents d..e-1: as many as fit; at least one if the shard is empty.
            token_base = document_token_ends[d - 1] if d else 0
            room = self.shard_tokens - self._counts["tokens"] + token_base
            e = int(np.searchsorted(document_token_ends, room, side="right"))
            if e <= d:
                if self._counts["documents"]:
                    self._close()  # the next document does not fit: start a new shard
                    continue
                e = d + 1
            self._append(d, e, tokens, sentence_ends, document_ends, sources, units)
            d = e
            if self._counts["tokens"] >= self.shard_tokens:
                self._close()

    def _append(self, d, e, tokens, sentence_ends, document_ends, sources, units) -> None:
        s0 = int(document_ends[d - 1]) if d else 0  # first sentence of document d
        s1 = int(document_ends[e - 1])
        t0 = int(sentence_ends[s0 - 1]) if s0 else 0
        t1 = int(sentence_ends[s1 - 1])
        c = self._counts
        f = self._files
        f["tokens"].write(memoryview(np.ascontiguousarray(tokens[t0:t1], dtype=self.dtype)))
        sentences = (sentence_ends[s0:s1] - t0 + c["tokens"]).astype(OFFSET, copy=False)
        documents = (document_ends[d:e] - s0 + c["sentences"]).astype(OFFSET, copy=False)
        f["sentences"].write(memoryview(sentences))
        f["documents"].write(memoryview(documents))
        f["sources"].write(memoryview(np.ascontiguousarray(sources[d:e], dtype=OFFSET)))
        if UNITS in f:
            f[UNITS].write(memoryview(np.ascontiguousarray(units[t0:t1], dtype=np.uint8)))
        c["documents"] += e - d
        c["sentences"] += s1 - s0
        c["tokens"] += t1 - t0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *error) -> None:
        for f in self._files.values():  # after a failure: no manifest, so the run is unfinished
            f.close()
        self._files = {}

    def close(self) -> list[dict[str, int | str]]:
        """Close the last shard and remove stale shard files of an earlier, larger run."""
        if self._files:
            self._close()
        keep = {f"{s['name']}-{a}.bin" for s in self.shards for a in self.arrays}
        for path in self.directory.iterdir():
            if _SHARD_FILE.fullmatch(path.name) and path.name not in keep:
                path.unlink()
        return self.shards


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json (last: a directory without one is an unfinished run); returns it."""
    body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **manifest}
    text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    (Path(directory) / MANIFEST).write_text(text, encoding="utf-8")
    return body


def _field_error(error: Exception) -> str:
    return f"no {error.args[0]!r} field" if isinstance(error, KeyError) else f"bad field ({error})"


class Shard:
    """The four memory-mapped arrays of one shard (plain ndarray views of the maps).

    With `vocab_size` and `num_sources` given, the contents are checked once (`check_shard`).
    """

    def __init__(
        self,
        directory: Path,
        index: int,
        info: dict[str, Any],
        dtype: np.dtype,
        vocab_size: int | None = None,
        num_sources: int | None = None,
        units: bool = False,
    ):
        try:
            self.name = str(info["name"])
            self.num_documents = int(info["documents"])
            self.num_sentences = int(info["sentences"])
            self.num_tokens = int(info["tokens"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"manifest entry of shard {index}: {_field_error(e)}", directory / MANIFEST
            ) from None
        if min(self.num_documents, self.num_sentences, self.num_tokens) < 0:
            raise InputError(
                f"manifest entry of shard {index} has a negative count", directory / MANIFEST
            )
        shapes = {
            "tokens": (dtype, (self.num_tokens,)),
            "sentences": (OFFSET, (self.num_sentences + 1,)),
            "documents": (OFFSET, (self.num_documents + 1,)),
            "sources": (OFFSET, (self.num_documents, 2)),
        }
        if units:
            shapes[UNITS] = (np.dtype(np.uint8), (self.num_tokens,))
        arrays = {}
        for array, (kind, shape) in shapes.items():
            path = shard_file(directory, index, array)
            expected = int(np.prod(shape)) * np.dtype(kind).itemsize
            size = path.stat().st_size if path.is_file() else None
            if size != expected:
                found = "missing" if size is None else f"{size} bytes"
                raise InputError(f"shard file is {found}, expected {expected} bytes", path)
            # np.memmap cannot map an empty file; an empty array needs no map.
            arrays[array] = np.asarray(
                np.memmap(path, kind, "r", shape=shape) if expected else np.zeros(shape, kind)
            )
        self.tokens = arrays["tokens"]  # (T,)
        self.sentence_offsets = arrays["sentences"]  # (S + 1,)
        self.document_offsets = arrays["documents"]  # (D + 1,)
        self.sources = arrays["sources"]  # (D, 2)
        self.units = arrays.get(UNITS)  # (T,) uint8 or None
        if vocab_size is not None and num_sources is not None:
            check_shard(self, directory, index, vocab_size, num_sources)

    def document(self, index: int) -> list[np.ndarray]:
        """Document `index` of this shard: one id array (a view, no copy) per sentence."""
        s0, s1 = self.document_offsets[index : index + 2].tolist()
        ends = self.sentence_offsets[s0 : s1 + 1].tolist()
        tokens = self.tokens
        return [tokens[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]

    def document_units(self, index: int) -> list[np.ndarray]:
        """The unit bits of document `index`, one uint8 array per sentence (as `document`)."""
        s0, s1 = self.document_offsets[index : index + 2].tolist()
        ends = self.sentence_offsets[s0 : s1 + 1].tolist()
        units = self.units
        return [units[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


# ----------------------------------------------------------------------------- content checks
# Sizes alone let a shard whose documents.bin was zeroed through: every document then has no
# sentence and pretraining looked for instances forever. One vectorised pass per shard at open
# (a max over the tokens, a diff over the offsets) turns any such file into one line naming it.
_REDO = "the file is corrupt; run `muppets prepare` again"


def check_offsets(offsets: np.ndarray, total: int, item: str, unit: str, path: Path) -> None:
    """offsets (N + 1,) must run from 0 to `total`, strictly rising: every item has >= 1 unit
    (prepare drops empty sentences and documents, so an empty one means a damaged file)."""
    if offsets[0] != 0:
        raise InputError(f"{item} offsets start at {offsets[0]}, not 0; {_REDO}", path)
    bad = np.flatnonzero(np.diff(offsets) <= 0)  # (k,) items that are empty or run backwards
    if len(bad):
        k = int(bad[0])
        found = f"{offsets[k]} -> {offsets[k + 1]}"
        message = f"{item} {k} has no {unit}s (offsets {found}; {len(bad)} such {item}s)"
        raise InputError(f"{message}; {_REDO}", path)
    if offsets[-1] != total:
        message = f"{item} offsets end at {offsets[-1]}, not at the shard's {total} {unit}s"
        raise InputError(f"{message}; {_REDO}", path)


def check_tokens(tokens: np.ndarray, vocab_size: int, path: Path) -> None:
    """Every id below `vocab_size` (an id past it would fail later as an IndexError)."""
    if len(tokens) and int(tokens.max()) >= vocab_size:
        k = int(np.flatnonzero(tokens >= vocab_size)[0])
        message = f"token {k} has id {tokens[k]}, not below the vocabulary size {vocab_size}"
        raise InputError(f"{message}; {_REDO} (with this tokenizer)", path)


def check_sources(sources: np.ndarray, num_sources: int, path: Path) -> None:
    """(D, 2) rows of (source file index < num_sources, line >= 1)."""
    bad = np.flatnonzero((sources[:, 0] < 0) | (sources[:, 0] >= num_sources) | (sources[:, 1] < 1))
    if len(bad):
        k = int(bad[0])
        found = f"file {sources[k, 0]}, line {sources[k, 1]}"
        message = (
            f"document {k} comes from {found}: not a line of the manifest's {num_sources} files"
        )
        raise InputError(f"{message}; {_REDO}", path)


def check_shard(shard: Shard, directory: Path, index: int, vocab_size: int, num_sources: int):
    check_offsets(
        shard.document_offsets,
        shard.num_sentences,
        "document",
        "sentence",
        shard_file(directory, index, "documents"),
    )
    check_offsets(
        shard.sentence_offsets,
        shard.num_tokens,
        "sentence",
        "token",
        shard_file(directory, index, "sentences"),
    )
    check_tokens(shard.tokens, vocab_size, shard_file(directory, index, "tokens"))
    check_sources(shard.sources, num_sources, shard_file(directory, index, "sources"))


class ShardedCorpus(Sequence):
    """A shards directory as a `Sequence` of documents; a document is `list[np.ndarray]`.

    Each array holds one sentence's WordPiece ids (no special tokens) in the stored dtype, as a
    read-only view of the memory map. Pickles as its directory, so data-loader workers reopen the
    maps instead of copying them.
    """

    def __init__(self, directory: str | Path, check: bool = True):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise InputError(f"no {MANIFEST}: not a finished `muppets prepare` output", directory)
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"unreadable manifest: {e}", path) from None
        found = (self.manifest.get("format"), self.manifest.get("version"))
        if found != (FORMAT_NAME, FORMAT_VERSION):
            want = f"{FORMAT_NAME} version {FORMAT_VERSION}"
            raise InputError(f"manifest is {found[0]} version {found[1]}, expected {want}", path)
        try:  # a hand-edited manifest: one line naming it, not a KeyError
            self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
            self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
            self.tokenizer_fingerprint = str(self.manifest["tokenizer"]["fingerprint"])
            self.source_paths = [str(s["path"]) for s in self.manifest["sources"]]
            infos = list(self.manifest["shards"])
            self.unit_kinds = dict(self.manifest.get(UNITS) or {})  # kind -> how it was made
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"manifest: {_field_error(e)}", path) from None
        checks = (self.vocab_size, len(self.source_paths)) if check else (None, None)
        has_units = bool(self.unit_kinds)
        self.shards = [
            Shard(self.directory, i, info, self.dtype, *checks, units=has_units)
            for i, info in enumerate(infos)
        ]
        # _starts[k] = global index of shard k's first document; _starts[-1] = len(self)
        self._starts = np.cumsum([0] + [s.num_documents for s in self.shards]).tolist()
        self.num_sentences = sum(s.num_sentences for s in self.shards)
        self.num_tokens = sum(s.num_tokens for s in self.shards)

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[Shard, int]:
        """(shard, index within the shard) of global document `index` (negative allowed)."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"document {index} out of range for {n} documents")
        k = bisect.bisect_right(self._starts, index) - 1
        return self.shards[k], index - self._starts[k]

    def __getitem__(self, index):  # int -> list[np.ndarray]; slice -> list of documents
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        shard, local = self.locate(int(index))
        return shard.document(local)

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        for shard in self.shards:  # no bisect per document
            for local in range(shard.num_documents):
                yield shard.document(local)

    def units(self, index: int) -> list[np.ndarray]:
        """Document `index`'s unit bits, one uint8 array per sentence (needs `unit_kinds`)."""
        shard, local = self.locate(int(index))
        return shard.document_units(local)

    def source(self, index: int) -> tuple[str, int]:
        """(input path as given to prepare, 1-based line) where document `index` starts."""
        shard, local = self.locate(index)
        file_index, line = shard.sources[local].tolist()
        return self.source_paths[file_index], line

    def for_rank(self, rank: int, world_size: int) -> RankSplit:
        """Every `world_size`-th document starting at `rank`: disjoint, together complete."""
        return RankSplit(self, rank, world_size)

    def check_tokenizer(self, fingerprint: str) -> None:
        """Raise InputError if the shards were made with another tokenizer."""
        if fingerprint != self.tokenizer_fingerprint:
            raise InputError(
                f"shards were made with tokenizer {self.tokenizer_fingerprint}, "
                f"not {fingerprint}; run `muppets prepare` again",
                self.directory / MANIFEST,
            )

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"], check=False)  # the pickling process checked them


class RankSplit(Sequence):
    """Documents rank, rank + world_size, ... of a corpus; `global_index(i)` maps back."""

    def __init__(self, corpus: ShardedCorpus, rank: int, world_size: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.corpus, self.rank, self.world_size = corpus, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, len(self.corpus), self.world_size))

    def global_index(self, index: int) -> int:
        return range(self.rank, len(self.corpus), self.world_size)[index]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.corpus[self.global_index(index)]
