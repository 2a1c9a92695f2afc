"""Recipes behind `muppets tokenizer train` and `muppets prepare`.

Both stream the corpus through the readers of text.py: memory does not grow with the corpus.
`prepare_corpus` tokenizes once into the memory-mapped shards of shards.py, copies the tokenizer
beside them and writes manifest.json last. Its output is a function of the inputs (paths as given,
never made absolute; no timestamps), so two runs give byte-identical directories.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from muppets.data import multilingual
from muppets.data.boundaries import WordTagger, unit_annotator
from muppets.data.document_ids import DocumentEncoder, batch_documents, read_ahead
from muppets.data.shards import MANIFEST, ShardWriter, write_manifest
from muppets.data.text import (
    ERROR_POLICIES,
    FORMATS,
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
    tokenize = DocumentEncoder(tokenizer, files)
    reading = (config.format, config.text_field, config.errors)
    if plans:  # each language's lines at its rate, segmented by the corpus's language
        documents = multilingual.sampled_documents(plans, *reading, stats)
    else:
        documents = read_documents(files, *reading, True, config.language, stats)
    batches = batch_documents(documents, config.batch_sentences)
    batches = read_ahead(batches, config.prefetch_batches)
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
