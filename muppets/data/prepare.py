"""Recipes behind `muppets tokenizer train` and `muppets prepare`.

Both stream the corpus through the readers of text.py: memory does not grow with the corpus.
`prepare_corpus` tokenizes once into the memory-mapped shards of shards.py, copies the tokenizer
beside them and writes manifest.json last. Its output is a function of the inputs (paths as given,
never made absolute; no timestamps), so two runs give byte-identical directories.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from muppets.data import multilingual
from muppets.data.boundaries import WordTagger, unit_annotator
from muppets.data.shards import MANIFEST, ShardWriter, token_dtype, write_manifest
from muppets.data.text import (
    ERROR_POLICIES,
    FORMATS,
    Document,
    ReadStats,
    read_documents,
    resolve_inputs,
)
from muppets.errors import ConfigError, InputError
from muppets.tokenization import SPECIAL_TOKENS
from muppets.tokenization.backend import BackendTokenizer
from muppets.tokenization.families import load_any_tokenizer, style_for, train_any
from muppets.tokenization.styles import KINDS, MODEL_TYPE_STYLES


def _check_reading(inputs: list[str], format: str, errors: str, text_field: str) -> None:
    if not inputs:
        raise ConfigError("inputs: give at least one file or glob")
    multilingual.parse_corpora(inputs)  # LANG=PATH on every input or on none
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got '{format}'")
    if errors not in ERROR_POLICIES:
        raise ConfigError(f"errors must be one of {', '.join(ERROR_POLICIES)}, got '{errors}'")
    if not text_field:
        raise ConfigError("text_field must not be empty")


_ALPHA_HELP = (
    "inputs written LANG=PATH: languages sampled with q ~ p^alpha, in (0, 1] (multilingual.py)"
)


_KIND_HELP = (
    "wordpiece, bpe (byte-level) or unigram (SentencePiece); auto: the --model family's "
    "(RoBERTa: bpe; ALBERT, XLNet: unigram), wordpiece without --model"
)
_MODEL_HELP = "model type or preset (bert, roberta-mini, albert, xlnet, ...) whose tokenizer style"


def model_type(model: str) -> str | None:
    """The model type of a type or preset name ("roberta-mini" -> "roberta"), None if unknown."""
    return next((t for t in MODEL_TYPE_STYLES if model == t or model.startswith(t + "-")), None)


@dataclass
class TokenizerTrainConfig:
    inputs: list[str] = field(metadata={"help": "text files or globs, read in order"})
    out: str = field(metadata={"help": "directory for tokenizer.json, vocab.txt and configs"})
    vocab_size: int = field(default=30522, metadata={"help": "vocabulary size incl. specials"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase and strip accents"})
    min_frequency: int = field(default=2, metadata={"help": "minimum count of a merged pair"})
    limit_alphabet: int = field(default=1000, metadata={"help": "most initial characters kept"})
    format: str = field(default="auto", metadata={"help": "auto, text, wiki or jsonl"})
    text_field: str = field(default="text", metadata={"help": "the text's key in jsonl records"})
    errors: str = field(default="strict", metadata={"help": "bytes not UTF-8: strict or replace"})
    alpha: float = field(default=0.7, metadata={"help": _ALPHA_HELP})
    sampling_seed: int = field(default=0, metadata={"help": "seed of the languages' sampling"})
    kind: str = field(default="auto", metadata={"help": _KIND_HELP})
    model: str = field(default="", metadata={"help": _MODEL_HELP})

    def __post_init__(self) -> None:
        _check_reading(self.inputs, self.format, self.errors, self.text_field)
        multilingual.check_alpha(self.alpha)
        if self.kind not in ("auto", *KINDS):
            raise ConfigError(f"kind must be auto, {', '.join(KINDS)}; got '{self.kind}'")
        if self.model and model_type(self.model) is None:
            known = ", ".join(MODEL_TYPE_STYLES)
            raise ConfigError(f"model '{self.model}': not a model type or preset of {known}")
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ConfigError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if self.limit_alphabet < 1:
            raise ConfigError(f"limit_alphabet must be >= 1, got {self.limit_alphabet}")


@dataclass
class PrepareConfig:
    inputs: list[str] = field(metadata={"help": "text files or globs, read in order"})
    tokenizer: str = field(metadata={"help": "tokenizer directory or vocab.txt"})
    out: str = field(metadata={"help": "directory for the shards and manifest.json"})
    format: str = field(default="auto", metadata={"help": "auto, text, wiki or jsonl"})
    text_field: str = field(default="text", metadata={"help": "the text's key in jsonl records"})
    errors: str = field(default="strict", metadata={"help": "bytes not UTF-8: strict or replace"})
    language: str = field(default="en", metadata={"help": "sentencex language code"})
    shard_tokens: int = field(
        default=50_000_000, metadata={"help": "start a new shard before passing this many tokens"}
    )
    batch_sentences: int = field(
        default=8192, metadata={"help": "sentences per tokenizer call (memory vs. speed)"}
    )
    prefetch_batches: int = field(
        default=2, metadata={"help": "batches read ahead in a thread while encoding (0: none)"}
    )
    # ERNIE unit boundaries (data/boundaries.py), stored beside the tokens
    units_file: str | None = field(
        default=None, metadata={"help": "JSONL of phrase/entity character spans per document"}
    )
    phrases: bool = field(
        default=False, metadata={"help": "phrases from collocations (phrases.py)"}
    )
    phrases_from: str | None = field(
        default=None, metadata={"help": "use the phrases.json of these shards (held-out data)"}
    )
    phrase_min_count: float = field(default=5.0, metadata={"help": "phrase scoring's delta"})
    phrase_thresholds: list[float] = field(
        default_factory=lambda: [100.0, 50.0],
        metadata={"help": "score threshold of each phrase pass (score scaled by the word count)"},
    )
    entities_model: str | None = field(
        default=None, metadata={"help": "fine-tuned CoNLL-2003 tagger whose entities are units"}
    )
    alpha: float = field(default=0.7, metadata={"help": _ALPHA_HELP})
    sampling_seed: int = field(default=0, metadata={"help": "seed of the languages' sampling"})

    def __post_init__(self) -> None:
        _check_reading(self.inputs, self.format, self.errors, self.text_field)
        multilingual.check_alpha(self.alpha)
        if self.shard_tokens < 1:
            raise ConfigError(f"shard_tokens must be >= 1, got {self.shard_tokens}")
        if self.batch_sentences < 1:
            raise ConfigError(f"batch_sentences must be >= 1, got {self.batch_sentences}")
        if self.prefetch_batches < 0:
            raise ConfigError(f"prefetch_batches must be >= 0, got {self.prefetch_batches}")


def _sampling(config, out, tokenizer=None) -> list | None:
    """Several languages: their sampling plan, printed once and written to <out>/sampling.json;
    sizes in the tokenizer's tokens when there is one, else in characters."""
    reading = (config.format, config.text_field, config.errors)
    size = {}
    if tokenizer is not None:
        size = {
            "measure": lambda texts: sum(map(len, tokenizer.encode_batch(texts))),
            "unit": "tokens",
        }
    plans = multilingual.plan_sampling(
        config.inputs, config.alpha, config.sampling_seed, *reading, **size
    )
    if plans:
        print(multilingual.describe(plans, config.alpha), flush=True)
        record = multilingual.sampling_record(plans, config.alpha, config.sampling_seed)
        multilingual.write_sampling(out, record)
    return plans


def _progress(files: list[str], desc: str) -> tqdm:
    """Bytes of input consumed, shown as MB/s; silent when stderr is not a terminal."""
    total = sum(Path(f).stat().st_size for f in files)
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None)


def train_tokenizer(config: TokenizerTrainConfig) -> BackendTokenizer:
    """Stream every paragraph of the inputs into the trainer of `config.kind`; save to
    `config.out`."""
    style = style_for(config.kind, model_type(config.model) if config.model else None)
    files = resolve_inputs(multilingual.input_paths(config.inputs))  # fail before training
    plans = _sampling(config, config.out)
    bar = _progress(files, "tokenizer train")
    bar.total *= 2 if style.kind == "wordpiece" else 1  # train_wordpiece reads them twice
    passes: list[ReadStats] = []

    def paragraphs():  # the trainer counts words, so sentence segmentation would be wasted work
        stats, seen = ReadStats(), 0
        passes.append(stats)
        reading = (config.format, config.text_field, config.errors)
        if plans:  # each language's lines at its rate
            documents = ([p] for p in multilingual.sampled_paragraphs(plans, *reading, stats))
        else:
            documents = (d.sentences for d in read_documents(files, *reading, False, stats=stats))
        for document in documents:
            yield from document
            if stats.bytes_read - seen > 1 << 20:
                bar.update(stats.bytes_read - seen)
                seen = stats.bytes_read

    with bar:
        tokenizer = train_any(
            style,
            paragraphs,
            config.vocab_size,
            config.lowercase,
            config.min_frequency,
            config.limit_alphabet,
        )
    tokenizer.save(config.out)
    stats = passes[-1]
    print(
        f"tokenizer: {tokenizer.vocab_size} {style.kind} tokens ({style.tokenizer_class}) from "
        f"{stats.documents} documents "
        f"in {stats.files} file(s) -> {config.out}" + _skipped_note(stats, 0, None)
    )
    return tokenizer


def _skipped_note(stats: ReadStats, no_tokens: int, first_no_tokens: str | None) -> str:
    notes = []
    if stats.skipped_documents:
        notes.append(
            f"skipped {stats.skipped_documents} empty document(s), first at {stats.first_skipped}"
        )
    if no_tokens:
        notes.append(f"skipped {no_tokens} document(s) without tokens, first at {first_no_tokens}")
    if stats.replaced_lines:
        notes.append(f"replaced bytes that are not UTF-8 on {stats.replaced_lines} line(s)")
    if stats.unsegmented_paragraphs:
        notes.append(
            f"sentencex failed on {stats.unsegmented_paragraphs} paragraph(s), kept each whole; "
            f"first at {stats.first_unsegmented}"
        )
    return "".join(f"\n  {note}" for note in notes)


class _Tokenize:
    """Batches of documents -> flat arrays for ShardWriter.write, counting what has no tokens.

    Speed: the tokenizer pays a fixed cost per input string (added-token scan, normalizer and
    Encoding set-up, one Python object back), so encoding each document as one string,
    "s1[SEP]s2[SEP]...sN[SEP]", and cutting the ids at the [SEP] ids takes ~7% less CPU
    than one string per sentence (wiki.train.00, one Rust thread: 7.8 s against 8.4 s). It gives
    the same ids in every family (checked on every document of two train files; RoBERTa's
    "</s>", ALBERT's "[SEP]" in tests/test_tokenizer_families.py) because the separator is a
    special token that `tokenizers` cuts out before normalizing and pre-tokenizing each part on its
    own. A separator the file declares otherwise (normalized, stripping spaces), and batches whose
    text itself contains it, take the plain path of one string per sentence.
    """

    def __init__(self, tokenizer: BackendTokenizer, files: list[str]):
        self.tokenizer = tokenizer
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.file_index = {path: i for i, path in enumerate(files)}
        self.skipped_documents = self.skipped_sentences = 0
        self.first_skipped: str | None = None
        self.separator = tokenizer.id_to_token(tokenizer.sep_id)
        added = {t.content: t for t in tokenizer.backend.get_added_tokens_decoder().values()}
        sep = added.get(self.separator)
        self.joined = sep is not None and not (
            sep.normalized or sep.lstrip or sep.rstrip or sep.single_word
        )

    def encode(self, documents: list[Document], num_sentences: int) -> tuple[np.ndarray, ...]:
        """(tokens (T,), lengths (S,)) of every sentence of the batch, empty sentences included."""
        if self.joined:
            separator = self.separator
            texts = [separator.join(d.sentences) + separator for d in documents]
            if sum(t.count(separator) for t in texts) == num_sentences:
                backend = self.tokenizer.backend
                ids = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
                total = sum(map(len, ids))
                flat = np.fromiter(chain.from_iterable(ids), self.dtype, total)  # (T + S,)
                is_sep = flat == self.tokenizer.sep_id
                ends = np.flatnonzero(is_sep)  # (S,) the separator closing each sentence
                if len(ends) == num_sentences:  # else an added-token rule matched elsewhere
                    lengths = np.diff(ends, prepend=-1) - 1
                    return flat[~is_sep], lengths
        sentences = [s for d in documents for s in d.sentences]
        ids = self.tokenizer.encode_batch(sentences)
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))  # (S,)
        tokens = np.fromiter(chain.from_iterable(ids), self.dtype, int(lengths.sum()))  # (T,)
        return tokens, lengths

    def __call__(self, documents: list[Document]) -> tuple[np.ndarray, ...]:
        counts = np.fromiter((len(d.sentences) for d in documents), np.int64, len(documents))
        sources = np.array([(self.file_index[d.path], d.line) for d in documents], np.int64)
        tokens, lengths = self.encode(documents, int(counts.sum()))
        empty = lengths == 0  # e.g. a "sentence" of control characters only
        if empty.any():
            self.skipped_sentences += int(empty.sum())
            owner = np.repeat(np.arange(len(documents)), counts)  # (S,) document of each sentence
            counts = np.bincount(owner[~empty], minlength=len(documents))
            lengths = lengths[~empty]
            keep = counts > 0
            if not keep.all():
                first = documents[int(np.argmin(keep))]
                self.first_skipped = self.first_skipped or f"{first.path}:{first.line}"
                self.skipped_documents += int((~keep).sum())
                counts, sources = counts[keep], sources[keep]
        return tokens, lengths, counts, sources


def _batches(documents: Iterable[Document], batch_sentences: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document.sentences)
        if size >= batch_sentences:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _prefetch(items: Iterator, depth: int) -> Iterator:
    """Yield from `items`, produced up to `depth` ahead by a background thread, in order.

    Why: reading and sentence segmentation are Python and hold the GIL, while encode_batch_fast
    releases it. Read in line, one core idles while Python reads; read ahead, both cores stay
    busy (measured in bench/RESULTS.md). The queue bounds the memory to `depth` batches.
    """
    if depth == 0:
        yield from items
        return
    done, stop = object(), threading.Event()
    ahead: queue.Queue = queue.Queue(maxsize=depth)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="muppets-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not done:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()  # the consumer stopped early or failed: let the producer end
        thread.join()


def prepare_corpus(config: PrepareConfig, entities: WordTagger | None = None) -> dict[str, Any]:
    """Tokenize the inputs into `config.out`; returns the manifest. `entities`: the word tagger
    of `config.entities_model` (recipes/entity_units.py loads it)."""
    tokenizer = load_any_tokenizer(config.tokenizer)
    files = resolve_inputs(multilingual.input_paths(config.inputs))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is written, out is unfinished
    plans = _sampling(config, out, tokenizer)
    stats = ReadStats()
    tokenize = _Tokenize(tokenizer, files)
    reading = (config.format, config.text_field, config.errors)
    if plans:  # each language's lines at its rate, segmented by the corpus's language
        documents = multilingual.sampled_documents(plans, *reading, stats)
    else:
        documents = read_documents(files, *reading, True, config.language, stats)
    batches = _prefetch(_batches(documents, config.batch_sentences), config.prefetch_batches)
    units = unit_annotator(config, tokenizer, files, entities)  # None: no unit boundaries
    writer = ShardWriter(out, tokenizer.vocab_size, config.shard_tokens, units is not None)
    with _progress(files, "prepare") as bar, closing(batches), writer:
        for batch in batches:
            arrays = tokenize(batch)
            writer.write(*arrays, units=units(batch, len(arrays[0])) if units else None)
            bar.update(stats.bytes_read - bar.n)
        shards = writer.close()
    written = {
        key: sum(int(s[key]) for s in shards) for key in ("documents", "sentences", "tokens")
    }
    if written["tokens"] == 0:
        raise InputError("no tokens in the inputs: every sentence tokenized to nothing", files[0])
    tokenizer.save(out)  # the shards directory is self-contained
    manifest = {
        "dtype": tokenize.dtype.name,
        **written,
        "skipped": {
            "empty_documents": stats.skipped_documents,
            "documents_without_tokens": tokenize.skipped_documents,
            "sentences_without_tokens": tokenize.skipped_sentences,
            "lines_with_replaced_bytes": stats.replaced_lines,
            "unsegmented_paragraphs": stats.unsegmented_paragraphs,
        },
        "tokenizer": {
            "fingerprint": tokenizer.fingerprint(),
            "vocab_size": tokenizer.vocab_size,
            "lowercase": tokenizer.lowercase,
            "source": str(config.tokenizer),
        },
        "reading": {
            "language": [p.language for p in plans] if plans else config.language,
            "errors": config.errors,
            "text_field": config.text_field,
        },
        "sources": [
            {"path": p, "bytes": Path(p).stat().st_size, "format": stats.formats[p]} for p in files
        ],
        "shards": shards,
    }
    if units:
        manifest["units"] = units.finish()
    manifest = write_manifest(out, manifest)
    print(
        f"prepare: {written['documents']} documents, {written['sentences']} sentences, "
        f"{written['tokens']} tokens in {len(shards)} shard(s) -> {out}"
        + _skipped_note(stats, tokenize.skipped_documents, tokenize.first_skipped)
    )
    return manifest
