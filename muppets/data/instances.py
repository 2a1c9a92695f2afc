"""Pretraining instances: BERT next-sentence pairs, ALBERT sentence-order pairs, RoBERTa packing.

A document is a sequence of sentences, each a 1-D int array of WordPiece ids without special
tokens; a corpus is a `Sequence` of documents (a list, or shards.ShardedCorpus). Inputs are only
read; every instance owns new arrays.

Sources: Devlin et al. 2019 §3.1 "Task #2: Next Sentence Prediction" and appendix A.2;
google-research/bert create_pretraining_data.py (create_training_instances,
create_instances_from_document, truncate_seq_pair); Lan et al. 2020 (ALBERT) §3.1 "Inter-sentence
coherence loss" and google-research/albert create_pretraining_data.py; Liu et al. 2019 (RoBERTa)
§4.2 "FULL-SENTENCES".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from muppets.data.masking import RowMasker
from muppets.errors import ConfigError, InputError

Document = Sequence[np.ndarray]
Corpus = Sequence[Document]


@dataclass(frozen=True, eq=False)
class Instance:
    tokens: np.ndarray  # (T,) int64: [CLS] A [SEP] B [SEP], or [CLS] ... [SEP]
    segment_ids: np.ndarray  # (T,) int64: 0 up to and including the first [SEP], 1 after
    label: int | None = None  # NSP: 1 = B is random; SOP: 1 = swapped; None: no pair task
    lm_labels: np.ndarray | None = None  # (T,) original id where predicted, -100 elsewhere


def _concat(pieces: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces] or [np.zeros(0, int)])


def _pair(a: np.ndarray, b: np.ndarray, label: int, cls_id: int, sep_id: int) -> Instance:
    """[CLS] A [SEP] B [SEP] with segment ids 0 (A and its [SEP]) and 1 (B and its [SEP])."""
    if len(a) == 0 or len(b) == 0:  # google asserts the same; only empty sentences get here
        raise InputError("a sentence pair came out empty: drop empty sentences before pairing")
    tokens = np.concatenate(([cls_id], a, [sep_id], b, [sep_id])).astype(np.int64)
    segment_ids = np.concatenate((np.zeros(len(a) + 2), np.ones(len(b) + 1))).astype(np.int64)
    return Instance(tokens, segment_ids, label)


def _target_length(max_num_tokens: int, short_seq_prob: float, rng: np.random.Generator) -> int:
    """Usually fill the sequence; with short_seq_prob, a length in [2, max] so that fine-tuning on
    short inputs is not out of distribution (create_instances_from_document). Drawn once per
    document, as google does."""
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_num_tokens + 1))
    return max_num_tokens


def _truncate_pair(
    a: np.ndarray, b: np.ndarray, max_num_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """truncate_seq_pair: drop one token at a time from the longer side (B on a tie), from its
    front or its back at random, "to add more randomness and avoid biases"."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return a[a_lo:a_hi], b[b_lo:b_hi]


def _check_length(max_seq_length: int) -> int:
    if max_seq_length < 5:  # room for [CLS] [SEP] [SEP] and a target length >= 2
        raise ConfigError(f"max_seq_length must be >= 5 for sentence pairs, got {max_seq_length}")
    return max_seq_length - 3


def _random_span(
    corpus: Corpus, document_index: int, target_length: int, rng: np.random.Generator
) -> np.ndarray:
    """B for a random-next pair: sentences from a random start in another document, until B
    reaches target_length. google tries 10 draws to avoid A's document; we draw uniformly among
    the other documents, so B never comes from A's document."""
    other = int(rng.integers(len(corpus) - 1))
    other += other >= document_index
    document = corpus[other]
    if len(document) == 0:
        raise InputError(f"document {other} has no sentences; drop empty documents first")
    pieces, length = [], 0
    for j in range(int(rng.integers(len(document))), len(document)):
        pieces.append(document[j])
        length += len(document[j])
        if length >= target_length:
            break
    return _concat(pieces)


def create_nsp_instances(
    corpus: Corpus,
    document_index: int,
    rng: np.random.Generator,
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    short_seq_prob: float = 0.1,
) -> list[Instance]:
    """BERT next-sentence pairs from one document (create_instances_from_document).

    Sentences accumulate into a chunk until it reaches the target length (or the document ends);
    the chunk is cut after a random sentence a_end into A and B. Half the time (always when the
    chunk is one sentence) B is replaced by a span of another document, label 1, and the chunk's
    unused sentences are put back to start the next chunk; else label 0.
    """
    if len(corpus) < 2:
        raise InputError("next-sentence pairs need at least 2 documents")
    max_num_tokens = _check_length(max_seq_length)
    document = corpus[document_index]
    target = _target_length(max_num_tokens, short_seq_prob, rng)
    instances: list[Instance] = []
    chunk: list[np.ndarray] = []
    length, i = 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            a = _concat(chunk[:a_end])
            if len(chunk) == 1 or rng.random() < 0.5:
                label = 1
                b = _random_span(corpus, document_index, target - len(a), rng)
                i -= len(chunk) - a_end  # "we don't want to waste" the unused sentences
            else:
                label = 0
                b = _concat(chunk[a_end:])
            a, b = _truncate_pair(a, b, max_num_tokens, rng)
            instances.append(_pair(a, b, label, cls_id, sep_id))
            chunk, length = [], 0
        i += 1
    return instances


def create_sop_instances(
    corpus: Corpus,
    document_index: int,
    rng: np.random.Generator,
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    short_seq_prob: float = 0.1,
) -> list[Instance]:
    """ALBERT sentence-order pairs: A and B are consecutive segments of the same document; with
    probability 1/2 they are swapped (label 1), so the negatives are exactly swapped positives.

    Chunking and a_end follow create_instances_from_document. Where ALBERT's code falls back to a
    random-document B for a one-sentence chunk, we cut that sentence at a random token instead,
    so that every pair stays in-document; a one-token, one-sentence chunk gives no instance.
    """
    max_num_tokens = _check_length(max_seq_length)
    document = corpus[document_index]
    target = _target_length(max_num_tokens, short_seq_prob, rng)
    instances: list[Instance] = []
    chunk: list[np.ndarray] = []
    length = 0
    for i in range(len(document)):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            whole = _concat(chunk)
            if len(chunk) >= 2:
                cut = sum(len(s) for s in chunk[: int(rng.integers(1, len(chunk)))])
            else:
                cut = int(rng.integers(1, len(whole))) if len(whole) >= 2 else 0
            if cut > 0:
                a, b = whole[:cut], whole[cut:]
                swapped = rng.random() < 0.5
                if swapped:  # ALBERT: "we just swap tokens_a and tokens_b"
                    a, b = b, a
                a, b = _truncate_pair(a, b, max_num_tokens, rng)
                instances.append(_pair(a, b, int(swapped), cls_id, sep_id))
            chunk, length = [], 0
    return instances


def create_training_instances(
    corpus: Corpus,
    rng: np.random.Generator,
    create: Callable[[Corpus, int, np.random.Generator], list[Instance]],
    *,
    dupe_factor: int = 10,
    mask: RowMasker | None = None,
) -> list[Instance]:
    """google's create_training_instances: `dupe_factor` passes over every document, each with
    fresh randomness (targets, cuts, random B, and masks when `mask` is given), then one shuffle.

    `create` is create_nsp_instances or create_sop_instances with its keywords bound
    (functools.partial); `mask` a row masker from masking.py with its config bound.
    """
    if dupe_factor < 1:
        raise ConfigError(f"dupe_factor must be >= 1, got {dupe_factor}")
    empty = [d for d in range(len(corpus)) if len(corpus[d]) == 0]
    if empty:  # google drops them; we say so instead, since one could be drawn as a random B
        raise InputError(f"{len(empty)} empty documents (first: {empty[0]}); drop them first")
    instances: list[Instance] = []
    for _ in range(dupe_factor):
        for document_index in range(len(corpus)):
            for instance in create(corpus, document_index, rng):
                if mask is not None:
                    tokens, lm_labels = mask(instance.tokens, rng)
                    instance = dataclasses.replace(instance, tokens=tokens, lm_labels=lm_labels)
                instances.append(instance)
    return [instances[k] for k in rng.permutation(len(instances))]


def pack_full_sentences(
    corpus: Corpus, *, max_seq_length: int, cls_id: int, sep_id: int
) -> Iterator[Instance]:
    """RoBERTa FULL-SENTENCES: `[CLS] s1 s2 ... [SEP]`, contiguous sentences up to
    max_seq_length - 2 tokens, crossing document boundaries with an extra [SEP] between documents
    (Liu et al. §4.2). A sentence longer than the budget is cut into budget-sized pieces, never
    dropped. A block never starts with the document separator. Streams: one block in memory.
    """
    budget = max_seq_length - 2
    if budget < 1:
        raise ConfigError(f"max_seq_length must be >= 3, got {max_seq_length}")
    block: list[np.ndarray] = []
    used = 0
    for document_index in range(len(corpus)):
        new_document = True
        for sentence in corpus[document_index]:
            for start in range(0, len(sentence), budget):
                piece = np.asarray(sentence[start : start + budget], dtype=np.int64)
                separator = int(new_document and used > 0)
                if used + separator + len(piece) > budget:
                    yield _block(block, cls_id, sep_id)
                    block, used, separator = [], 0, 0
                if separator:
                    block.append(np.array([sep_id], dtype=np.int64))
                block.append(piece)
                used += separator + len(piece)
                new_document = False
    if block:
        yield _block(block, cls_id, sep_id)


def _block(pieces: list[np.ndarray], cls_id: int, sep_id: int) -> Instance:
    tokens = np.concatenate(([cls_id], *pieces, [sep_id])).astype(np.int64)
    return Instance(tokens, np.zeros(len(tokens), dtype=np.int64))
