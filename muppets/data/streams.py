"""Contiguous LM streams for ELMo's biLM: a corpus as one stream of words, cut into windows.

As bilm-tf (bilm/data.py, LMDataset and BidirectionalLMDataset): every sentence becomes
`<S> w_1 ... w_n </S>`, the sentences follow each other in corpus order (text.py's documents, file
by file) as one token stream per epoch, and the stream is cut into windows of `window` tokens (20,
bilm-tf's unroll_steps). At every position the forward LM predicts the next token of the stream and
the backward LM the previous one, across the window's ends too (the tokens just outside it), so each
token of an epoch is a forward target exactly once and a backward target exactly once (all but the
stream's first, resp. last). A token after </S> is the next <S>, as in bilm-tf.

Stateless windows: bilm-tf carries the LSTM states of a batch row into its next window; here every
window starts from zero states, so the first positions of a window see little context. Windows are
therefore independent rows, which is what lets them be shuffled and split across ranks freely.

Words: `tokenize_words`, an offline Moses-like regex (ELMo's data, the 1B Word Benchmark, was
Moses-tokenized): punctuation split off, hyphenated words and numbers such as 3.14 or 1,000 kept
whole, acronyms "U.S." kept whole, clitics split as Moses does for English ("don't" -> don 't,
"John's" -> John 's). Case is kept. Invisible format characters (soft hyphen, zero-width space,
byte-order mark) are removed first; a sentence left without words is skipped and counted. Words
longer than 50 bytes are cut by the character mapper (tokenization/characters.py), not refused.

Batches (one rank): global batches of `world_size * batch_size` consecutive windows of the
(optionally shuffled) epoch; rank r takes rows r*B .. (r+1)*B - 1 of each, so the ranks' windows are
disjoint and together complete. The epoch's last global batch is filled with empty rows (all
padding, no targets), so every rank yields the same number of batches. Epochs repeat forever.

Shuffling: windows are permuted within consecutive blocks of `shuffle_windows` windows by
numpy's default_rng([seed, epoch, block]); 0 or 1 keeps corpus order. The position (epoch, windows
consumed in the epoch) is global, the same on every rank; resuming replays the epoch's text and
skips the consumed windows (characters are only built for the windows yielded).

Every rank reads and tokenizes the whole corpus and keeps its own rows: text processing costs
far less than the biLM's step, and it keeps the split exact without an index of the corpus.

Batch keys (B rows, n = window tokens, C = 50 characters):
    char_ids          (B, n, C) int64, 0 at padding tokens (characters.py)
    word_ids          (B, n)    int64, 0 at padding
    attention_mask    (B, n)    bool, real tokens first
    forward_targets   (B, n)    int64 word id of the next token, -100 where none
    backward_targets  (B, n)    int64 word id of the previous token, -100 where none
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from muppets.data.text import ReadStats, read_documents
from muppets.errors import ConfigError, InputError
from muppets.tokenization.characters import (
    BOS_TOKEN,
    EOS_TOKEN,
    MAX_CHARACTERS_PER_TOKEN,
    word_to_char_ids,
)
from muppets.tokenization.words import WordVocabulary

IGNORE = -100  # target of positions that predict nothing (models/elmo.py IGNORE)

# Alternatives are tried in order at each position (re.findall).
WORD_PATTERN = re.compile(
    r"(?:[^\W\d_]\.){2,}"  # acronyms and abbreviations: U.S. e.g.
    r"|\d+(?:[.,]\d+)+"  # numbers with separators: 3.14 1,000,000
    r"|\w+(?:-\w+)*"  # words, hyphenated compounds kept whole (Moses without -a)
    r"|(?<=\w)'\w+"  # clitics after a word: 's 't 're (Moses English: "don't" -> don 't)
    r"|\.{2,}"  # ellipsis
    r"|[^\w\s]"  # any other symbol, one character at a time
)
_INVISIBLE = str.maketrans(dict.fromkeys("\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\ufeff"))


def tokenize_words(text: str) -> list[str]:
    """Moses-like word tokens of one sentence (module docstring); [] if nothing is left."""
    return WORD_PATTERN.findall(text.translate(_INVISIBLE))


@dataclass
class StreamStats:
    """What one pass over the corpus saw (documents and skips of the reader included)."""

    documents: int = 0
    sentences: int = 0  # sentences with at least one word
    words: int = 0  # words without <S> / </S>
    tokens: int = 0  # stream tokens: words + 2 per sentence
    empty_sentences: int = 0  # sentences without any word after tokenization: skipped
    first_empty: str | None = None  # "path:line" of the first one
    empty_documents: int = 0  # documents without text (text.py's ReadStats)

    def as_dict(self) -> dict:
        return dict(vars(self))


def corpus_sentences(
    inputs: Sequence[str],
    format: str = "auto",
    errors: str = "strict",
    stats: StreamStats | None = None,
) -> Iterator[list[str]]:
    """The word lists of every sentence of the corpus, in order; empty ones skipped and counted."""
    stats = stats if stats is not None else StreamStats()
    read_stats = ReadStats()
    for document in read_documents(inputs, format=format, errors=errors, stats=read_stats):
        stats.documents += 1
        stats.empty_documents = read_stats.skipped_documents
        for sentence, line in zip(document.sentences, document.lines, strict=True):
            words = tokenize_words(sentence)
            if not words:
                stats.empty_sentences += 1
                stats.first_empty = stats.first_empty or f"{document.path}:{line}"
                continue
            stats.sentences += 1
            stats.words += len(words)
            stats.tokens += len(words) + 2
            yield words
    stats.empty_documents = read_stats.skipped_documents


def count_words(sentences: Iterable[list[str]]) -> Counter:
    """Word counts for build_word_vocabulary (boundaries are not words)."""
    counts: Counter = Counter()
    for words in sentences:
        counts.update(words)
    return counts


@dataclass(frozen=True, slots=True)
class Window:
    """`tokens` of the stream, with the token just before and just after (None at the ends)."""

    before: str | None
    tokens: list[str]
    after: str | None


def stream_windows(sentences: Iterable[list[str]], window: int) -> Iterator[Window]:
    """<S> w.. </S> <S> ... cut into windows of `window` tokens; the last one may be shorter."""
    before: str | None = None
    current: list[str] = []
    for words in sentences:
        for token in (BOS_TOKEN, *words, EOS_TOKEN):
            if len(current) == window:
                yield Window(before, current, token)
                before, current = current[-1], []
            current.append(token)
    if current:
        yield Window(before, current, None)


def shuffled(windows: Iterator[Window], block: int, seed: int, epoch: int) -> Iterator[Window]:
    """Windows permuted within consecutive blocks of `block` (identity for block <= 1)."""
    if block <= 1:
        yield from windows
        return
    index = 0
    while True:
        chunk = list(itertools.islice(windows, block))
        if not chunk:
            return
        order = np.random.default_rng([seed, epoch, index]).permutation(len(chunk))
        yield from (chunk[i] for i in order)
        index += 1


def collate_windows(
    windows: Sequence[Window | None], rows: int, window: int, vocabulary: WordVocabulary
) -> dict[str, torch.Tensor]:
    """`rows` x `window` batch tensors (module docstring); None or missing rows are padding."""
    char_ids = torch.zeros(rows, window, MAX_CHARACTERS_PER_TOKEN, dtype=torch.long)
    word_ids = torch.zeros(rows, window, dtype=torch.long)
    forward_targets = torch.full((rows, window), IGNORE, dtype=torch.long)
    backward_targets = torch.full((rows, window), IGNORE, dtype=torch.long)
    mask = torch.zeros(rows, window, dtype=torch.bool)
    lookup = vocabulary.token_to_id
    for b, w in enumerate(windows):
        if w is None:
            continue
        n = len(w.tokens)
        ids = [lookup(t) for t in w.tokens]
        # the stream around the window: [before, tokens..., after], IGNORE past the stream's ends
        around = [IGNORE if w.before is None else lookup(w.before), *ids]
        around.append(IGNORE if w.after is None else lookup(w.after))
        char_ids[b, :n] = torch.tensor([word_to_char_ids(t) for t in w.tokens])  # (n, C)
        word_ids[b, :n] = torch.tensor(ids)
        forward_targets[b, :n] = torch.tensor(around[2:])  # token t + 1
        backward_targets[b, :n] = torch.tensor(around[:n])  # token t - 1
        mask[b, :n] = True
    return {
        "char_ids": char_ids,
        "word_ids": word_ids,
        "attention_mask": mask,
        "forward_targets": forward_targets,
        "backward_targets": backward_targets,
    }


class WindowBatches:
    """Endless, resumable, rank-aware micro-batches of biLM windows (module docstring).

    `batch_size` is the number of windows per micro-batch on this rank. Position:
    state_dict() = {"epoch", "windows"}: windows of the epoch consumed by all ranks together.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        vocabulary: WordVocabulary,
        *,
        window: int = 20,
        batch_size: int = 32,
        shuffle_windows: int = 0,
        seed: int = 0,
        format: str = "auto",
        errors: str = "strict",
        rank: int = 0,
        world_size: int = 1,
    ):
        if window < 1 or batch_size < 1 or shuffle_windows < 0:
            raise ConfigError(
                f"window ({window}) and batch_size ({batch_size}) must be >= 1, "
                f"shuffle_windows ({shuffle_windows}) >= 0"
            )
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        self.inputs, self.vocabulary = list(inputs), vocabulary
        self.window, self.batch_size, self.shuffle_windows = window, batch_size, shuffle_windows
        self.seed, self.format, self.errors = seed, format, errors
        self.rank, self.world_size = rank, world_size
        self.epoch, self.windows_done = 0, 0
        self.stats = StreamStats()  # of the current epoch's pass
        self._source: Iterator[Window] | None = None

    def _open(self) -> Iterator[Window]:
        """The epoch's windows from the position on (replaying and skipping what was consumed)."""
        self.stats = StreamStats()
        sentences = corpus_sentences(self.inputs, self.format, self.errors, self.stats)
        windows = stream_windows(sentences, self.window)
        windows = shuffled(windows, self.shuffle_windows, self.seed, self.epoch)
        return itertools.islice(windows, self.windows_done, None)

    def __iter__(self) -> WindowBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        B, G = self.batch_size, self.batch_size * self.world_size
        while True:
            if self._source is None:
                self._source = self._open()
            # the next global batch: G windows (fewer at the end of the epoch)
            batch = list(itertools.islice(self._source, G))
            if batch:
                break
            if self.windows_done == 0:  # a whole epoch without a word
                raise InputError("no words in the training text", ", ".join(self.inputs))
            self._next_epoch()  # a position at the end of a text that has since become shorter
        self.windows_done += len(batch)
        following = next(self._source, None)  # so that the state says "next epoch" at its end
        if following is None:
            self._next_epoch()
        else:
            self._source = itertools.chain([following], self._source)
        mine = batch[self.rank * B : (self.rank + 1) * B]
        return collate_windows(mine, B, self.window, self.vocabulary)

    def _next_epoch(self) -> None:
        self.epoch, self.windows_done, self._source = self.epoch + 1, 0, None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "windows": self.windows_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.windows_done = int(state["epoch"]), int(state["windows"])
        self._source = None


def evaluation_windows(
    inputs: Sequence[str],
    vocabulary: WordVocabulary,
    *,
    window: int = 20,
    batch_size: int = 32,
    max_windows: int | None = None,
    format: str = "auto",
    errors: str = "strict",
    rank: int = 0,
    world_size: int = 1,
) -> list[dict[str, torch.Tensor]]:
    """The first `max_windows` windows of held-out text in order (all when None), as micro-batches;
    rank r keeps micro-batches r, r + W, ... Padding rows predict nothing, so they do not count."""
    windows = stream_windows(corpus_sentences(inputs, format, errors), window)
    kept = list(itertools.islice(windows, max_windows))
    starts = range(0, len(kept), batch_size)
    batches = [kept[i : i + batch_size] for i in starts]
    return [
        collate_windows(rows, len(rows), window, vocabulary) for rows in batches[rank::world_size]
    ]
