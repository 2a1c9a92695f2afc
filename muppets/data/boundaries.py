"""Unit boundaries for ERNIE masking: character spans -> the per-token links stored in shards.

Three sources, any together (`muppets prepare --units-file`, `--phrases`, `--entities-model`):

- A units file, JSONL, one line per document of the corpus in the order prepare reads them
  (documents without text are skipped by the reader and have no line):

      {"phrases": [[0, 8], [20, 31]], "entities": [[0, 8]], "text": "..."}

  Offsets are [start, end) character offsets into the document's text: its paragraphs (lines,
  stripped of surrounding spaces) joined by "\\n"; for a jsonl corpus of one-paragraph records
  that is the `text` field itself. "text" is optional; when given it must equal that text (it
  catches a file out of step with the corpus). Units of one kind may not overlap; a phrase may
  contain an entity. A bad offset, an overlap or a line out of step is one line naming the file
  and line (exit 2).
- Phrases learned from the corpus (phrases.py).
- Entities from a muppets NER model (recipes/entity_units.py hands in a word tagger).

A token belongs to a unit when its characters overlap the unit's; the masker then also joins the
rest of its word (unit_masking.py), so units are always whole words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from muppets.data.phrases import _WORD, PhraseModel, find_phrases, learn_phrases
from muppets.data.shards import UNIT_BITS
from muppets.data.text import Document, ReadStats, read_documents, read_lines
from muppets.errors import ConfigError, InputError

PHRASES_FILE = "phrases.json"  # beside the shards: the phrases their units came from
FILE_KEYS = {"phrases": "phrase", "entities": "entity"}  # units-file key -> unit kind
Spans = list[tuple[int, int]]
_LANGUAGE_INPUT = re.compile(r"^[A-Za-z_-]{2,12}=")  # multilingual "en=PATH" inputs
# words of each sentence -> BIO tags of each word (a CoNLL-2003 tagger)
WordTagger = Callable[[list[list[str]]], list[list[str]]]


def check_spans(spans: object, key: str, text: str, where: str, path: str, line: int) -> Spans:
    """[[start, end], ...] of one kind, sorted; every error names the file and line."""
    if not isinstance(spans, list):
        raise InputError(f"'{key}' must be a list of [start, end] pairs", path, line)
    out: Spans = []
    for item in spans:
        ok = isinstance(item, list) and len(item) == 2
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            raise InputError(
                f"'{key}': {item!r} is not a [start, end] pair of integers", path, line
            )
        start, end = item
        if start < 0 or end <= start:
            raise InputError(
                f"'{key}': [{start}, {end}] falls outside the text (need 0 <= start < end)",
                path,
                line,
            )
        if end > len(text):
            raise InputError(
                f"'{key}': [{start}, {end}] crosses the end of its document ({where}, "
                f"{len(text)} characters)",
                path,
                line,
            )
        out.append((start, end))
    out.sort()
    for (a, b), (c, d) in zip(out[:-1], out[1:], strict=True):
        if c < b:
            raise InputError(f"'{key}': units [{a}, {b}] and [{c}, {d}] overlap", path, line)
    return out


class UnitsFile:
    """The lines of a units file, read one document at a time, in step with the corpus."""

    def __init__(self, path: str, errors: str = "strict"):
        self.path = path
        self._lines: Iterator[tuple[int, str]] = (
            (n, t) for n, t in read_lines(path, errors, ReadStats()) if t.strip()
        )
        self.documents = 0

    def next(self, document: Document, text: str) -> dict[str, Spans]:
        """{kind: sorted spans} of the next document (`text`: the document's text)."""
        where = f"{document.path}:{document.line}"
        item = next(self._lines, None)
        if item is None:
            raise InputError(
                f"has {self.documents} lines, but the corpus has more documents (the next one "
                f"starts at {where})",
                self.path,
            )
        number, line = item
        self.documents += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            message = f"not valid JSON: {e.msg} (column {e.colno})"
            raise InputError(message, self.path, number) from None
        if not isinstance(record, dict):
            raise InputError("expected a JSON object", self.path, number)
        unknown = sorted(set(record) - set(FILE_KEYS) - {"text"})
        if unknown:
            valid = ", ".join([*FILE_KEYS, "text"])
            raise InputError(f"unknown key '{unknown[0]}' (valid: {valid})", self.path, number)
        if "text" in record and record["text"] != text:
            raise InputError(
                f"'text' differs from document {self.documents} of the corpus ({where}): one "
                "line per document, in reading order",
                self.path,
                number,
            )
        return {
            FILE_KEYS[key]: check_spans(record[key], key, text, where, self.path, number)
            for key in FILE_KEYS
            if key in record
        }

    def finish(self) -> None:
        """Every line was used: a longer file is out of step with the corpus."""
        item = next(self._lines, None)
        if item is not None:
            raise InputError(
                f"more lines than the corpus has documents ({self.documents})", self.path, item[0]
            )


def token_links(spans: Spans, offsets: np.ndarray) -> np.ndarray:
    """(T,) bool: token t is in the same unit as token t - 1. offsets (T, 2): characters of each
    token in the document; spans: sorted, non-overlapping [start, end) units."""
    if not spans or not len(offsets):
        return np.zeros(len(offsets), dtype=bool)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    unit = np.searchsorted(starts, offsets[:, 1], side="left") - 1  # last unit starting before
    inside = (unit >= 0) & (ends[np.maximum(unit, 0)] > offsets[:, 0])
    unit = np.where(inside, unit, -1)
    return np.concatenate(([False], (unit[1:] == unit[:-1]) & (unit[1:] >= 0)))


def bio_entities(tags: list[str]) -> list[tuple[int, int]]:
    """[first, last + 1) word ranges of the entities of BIO tags. An I-X that does not continue
    an X starts an entity, as conlleval reads it (tasks/tag_decoding.py's entity_spans)."""
    out: list[tuple[int, int]] = []
    kind = None  # type of the entity open at the previous word
    for i, tag in enumerate(tags):
        prefix, _, this = tag.partition("-")
        if prefix in ("B", "I") and this and not (prefix == "I" and this == kind):
            out.append((i, i + 1))
            kind = this
        elif prefix == "I" and this == kind:
            out[-1] = (out[-1][0], i + 1)
        else:
            kind = None
    return out


class UnitAnnotator:
    """Links (T,) uint8 for the tokens prepare writes, batch by batch (see the module doc).

    Reads the corpus a second time, unsegmented, to get every document's text; tokenizes the
    sentences again with offsets (prepare's fast path has none) and checks the counts agree.
    """

    def __init__(
        self,
        tokenizer,
        files: list[str],
        reading: dict,
        units_file: str | None = None,
        phrases: PhraseModel | None = None,
        entities: WordTagger | None = None,
        entities_source: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.texts = read_documents(files, segment=False, stats=ReadStats(), **reading)
        self.file = UnitsFile(units_file, reading["errors"]) if units_file else None
        self.phrases, self.entities = phrases, entities
        self.kinds: dict[str, dict] = {}
        if units_file:
            self.kinds = {k: {"source": "units file", "path": units_file} for k in UNIT_BITS}
        if phrases is not None:
            self.kinds["phrase"] = {"source": "collocations", **phrases.to_dict()}
        if entities is not None:
            self.kinds["entity"] = {"source": "ner model", "path": entities_source}
        self.counts = dict.fromkeys(self.kinds, 0)  # units found, for the summary line

    def __call__(self, documents: list[Document], num_tokens: int) -> np.ndarray:
        backend = self.tokenizer.backend
        sentences = [s for d in documents for s in d.sentences]
        encodings = backend.encode_batch(sentences, add_special_tokens=False)
        entities = self._entities(sentences) if self.entities else None  # per sentence
        links, k = [], 0
        for document in documents:
            text, starts = self._text(document)
            offsets = [  # (T_s, 2) characters of each token in the document's text
                np.asarray(encodings[k + j].offsets, dtype=np.int64).reshape(-1, 2) + s0
                for j, s0 in enumerate(starts)
            ]
            offsets = np.concatenate(offsets)  # (T_d, 2): empty sentences add nothing
            spans = self.file.next(document, text) if self.file else {}
            if self.phrases is not None:
                found = [find_phrases(s, self.phrases) for s in document.sentences]
                spans["phrase"] = _in_document(starts, found)
            if entities is not None:
                spans["entity"] = _in_document(starts, entities[k : k + len(starts)])
            k += len(starts)
            bits = np.zeros(len(offsets), dtype=np.uint8)
            for kind, kind_spans in spans.items():
                self.counts[kind] += len(kind_spans)
                bits |= token_links(kind_spans, offsets).astype(np.uint8) * UNIT_BITS[kind]
            links.append(bits)
        out = np.concatenate(links) if links else np.zeros(0, np.uint8)
        if len(out) != num_tokens:  # prepare's tokens and ours must be the same
            raise InputError(
                f"unit links cover {len(out)} tokens, the shards {num_tokens}: the tokenizer "
                "splits sentences differently with offsets; report this",
                documents[0].path,
                documents[0].line,
            )
        return out

    def _text(self, document: Document) -> tuple[str, list[int]]:
        """The document's text (from the unsegmented reading) and where each sentence starts."""
        whole = next(self.texts)
        if (whole.path, whole.line) != (document.path, document.line):  # never, unless a bug
            raise InputError("the two readings of the corpus disagree", document.path)
        text = "\n".join(whole.sentences)  # the paragraphs
        starts, cursor = [], 0
        for sentence in document.sentences:  # sentences are stripped pieces of the text
            cursor = text.index(sentence, cursor)
            starts.append(cursor)
            cursor += len(sentence)
        return text, starts

    def _entities(self, sentences: list[str]) -> list[Spans]:
        """The entity spans of each sentence (characters in the sentence), by the tagger."""
        words = [[m.span() for m in _WORD.finditer(s)] for s in sentences]  # (start, end) each
        cased = [[s[a:b] for a, b in ws] for s, ws in zip(sentences, words, strict=True)]
        tags = self.entities(cased)  # the tagger sees the words as written
        return [
            [(ws[a][0], ws[b - 1][1]) for a, b in bio_entities(t)]
            for ws, t in zip(words, tags, strict=True)
        ]

    def finish(self) -> dict[str, dict]:
        """The manifest's "units": each kind, how it was made and how many units were found."""
        if self.file:
            self.file.finish()
        return {kind: {**info, "units": self.counts[kind]} for kind, info in self.kinds.items()}


def _in_document(starts: list[int], spans: list[Spans]) -> Spans:
    """Spans of each sentence (characters in the sentence) -> spans in the document."""
    return [(s0 + a, s0 + b) for s0, found in zip(starts, spans, strict=True) for a, b in found]


def unit_annotator(config, tokenizer, files: list[str], entities: WordTagger | None = None):
    """prepare's UnitAnnotator for `config` (a PrepareConfig), or None without unit options.

    Learns the phrases first (one read of the corpus per threshold) when `config.phrases`.
    """
    if not (config.units_file or config.phrases or config.phrases_from or config.entities_model):
        return None
    if any(_LANGUAGE_INPUT.match(str(i)) for i in config.inputs):
        raise ConfigError("unit boundaries need the corpus read in order: no LANG=PATH inputs")
    if config.entities_model and entities is None:
        raise ConfigError("entities_model: run it through `muppets prepare` (it loads the model)")
    reading = {"format": config.format, "text_field": config.text_field, "errors": config.errors}
    phrases = None
    if config.phrases_from:  # e.g. held-out shards with the training shards' phrases
        phrases = PhraseModel.load(Path(config.phrases_from) / PHRASES_FILE)
    elif config.phrases:

        def sentences():
            for document in read_documents(files, **reading, language=config.language):
                yield from document.sentences

        thresholds = tuple(config.phrase_thresholds)
        phrases = learn_phrases(sentences, config.phrase_min_count, thresholds)
        found = ", ".join(f"{len(p)} in pass {k}" for k, p in enumerate(phrases.passes, 1))
        print(f"prepare: phrases from collocations: {found}", flush=True)
    if phrases is not None:
        Path(config.out).mkdir(parents=True, exist_ok=True)
        phrases.save(Path(config.out) / PHRASES_FILE)
    return UnitAnnotator(
        tokenizer,
        files,
        reading,
        config.units_file,
        phrases,
        entities,
        config.entities_model,
    )
