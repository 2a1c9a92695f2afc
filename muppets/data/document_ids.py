"""Documents -> the flat arrays that ShardWriter.write takes: batches, read ahead, encoded.

prepare_corpus (prepare.py) runs `read_ahead(batch_documents(...))` and hands each batch to a
`DocumentEncoder`; the arrays it returns are the shard writer's arguments, in document order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from itertools import chain

import numpy as np

from muppets.data.shards import token_dtype
from muppets.data.text import Document
from muppets.tokenization.backend import BackendTokenizer


class DocumentEncoder:
    """Batches of documents -> flat arrays for ShardWriter.write, counting what has no tokens.

    Speed: the tokenizer pays a fixed cost per input string (added-token scan, normalizer and
    Encoding set-up, one Python object back), so encoding each document as one string,
    "s1[SEP]s2[SEP]...sN[SEP]", and cutting the ids at the [SEP] ids takes ~7% less CPU
    than one string per sentence for WordPiece (wiki.train.00, one Rust thread: 7.8 s against
    8.4 s); not for byte-level BPE, which takes the plain path (see __init__). It gives
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
        # Byte-level BPE encodes joined documents ~35% slower than the same sentences one by one
        # (wiki.train.00, one Rust thread: 6.6-7.0 s against 4.9-5.3 s; lines: 4.8-5.4 s), so it
        # takes the plain path; Unigram is even (8.7 / 8.4 s), WordPiece gains (class docstring).
        self.joined = (
            tokenizer.kind != "bpe"
            and sep is not None
            and not (sep.normalized or sep.lstrip or sep.rstrip or sep.single_word)
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


def batch_documents(
    documents: Iterable[Document], batch_sentences: int
) -> Iterator[list[Document]]:
    """Whole documents, in order, in batches of at least `batch_sentences` sentences (the last
    batch may hold fewer)."""
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


def read_ahead(items: Iterator, depth: int) -> Iterator:
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
