"""Task examples -> tokenized features -> length-bucketed, dynamically padded batches.

One featurizer per head kind, all producing `Feature`s (one example may give several):
- classification / regression: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`; a pair that does not
  fit loses tokens from the end of the longer text, one at a time (google-research/bert
  run_classifier.py, `_truncate_seq_pair`; on a tie the second text loses).
- extractive QA: `[CLS] question [SEP] window [SEP]`, the question cut to max_query_length. Windows
  of the tokenized context start every doc_stride tokens until one reaches the context's end
  (run_squad.py's doc_stride), so no context token is ever truncated away. The start/end labels
  are the answer's first and last token inside the window, or [CLS]'s position in both (0; XLNet:
  the last) when the answer is not wholly inside it, or the question is unanswerable
  (run_squad.py).
- tagging: each word's sub-tokens; a word's label on its first sub-token and -100 elsewhere
  (Devlin et al. 2019 section 5.3). A sentence longer than fits is split at word boundaries into
  several features, so no word is lost (a single word longer than a window keeps its first
  sub-tokens, and with them its prediction).

Batches are padded to their own longest feature, never to max_seq_length. Training batches are
"sortish" (transformers' LengthGroupedSampler, mega-batches of 50 batches): shuffle, sort each
mega-batch by length, cut it into batches, shuffle the batches. Inference batches are cut from
the features sorted by length; their outputs go back to their features by index.

Shapes:
    B  batch size      T  longest feature in the batch
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from muppets.data.masking import IGNORE_INDEX
from muppets.data.readers.conll import Sentence
from muppets.data.readers.squad import QAExample
from muppets.data.readers.tabular import Example
from muppets.errors import ConfigError, InputError
from muppets.tokenization.wordpiece import WordPieceTokenizer

MEGA_BATCH = 50  # batches per sorted mega-batch (transformers' LengthGroupedSampler default)


@dataclass(frozen=True, slots=True, eq=False)
class Feature:
    """One model input. `targets` become batch keys: a number per feature ("labels",
    "start_positions", "end_positions") or a (T,) array of token labels ("labels", tagging)."""

    example: int  # index of the example (or sentence) in the list it was made from
    input_ids: np.ndarray  # (T,) int32 (int64 in batches; int32 halves SQuAD's memory)
    token_type_ids: np.ndarray  # (T,) int8
    targets: dict = field(default_factory=dict)
    word_ids: np.ndarray | None = None  # tagging: (T,) word index in the sentence, -1 = special
    # QA: (C, 2) [start, end) characters of the window's C context tokens, a view of the whole
    # context's offsets (not a copy), and the position of the first of them in input_ids.
    offsets: np.ndarray | None = None
    context_start: int = 0
    null_index: int = 0  # QA: where "no answer" points, the template's [CLS] (XLNet's: last)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def context_mask(self) -> np.ndarray:
        """(T,) True on the window's context tokens (QA)."""
        mask = np.zeros(len(self), dtype=bool)
        if self.offsets is not None:
            mask[self.context_start : self.context_start + len(self.offsets)] = True
        return mask

    @property
    def token_offsets(self) -> np.ndarray:
        """(T, 2) character offsets of every position, (0, 0) outside the context (QA)."""
        out = np.zeros((len(self), 2), dtype=np.int64)
        if self.offsets is not None:
            out[self.context_start : self.context_start + len(self.offsets)] = self.offsets
        return out


def _ids(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


def _types(n_first: int, n: int) -> np.ndarray:
    """Segment ids: n_first zeros, then ones up to n."""
    types = np.ones(n, dtype=np.int8)
    types[:n_first] = 0
    return types


# ---------------------------------------------------------------- classification and regression


def truncate_pair(a: list[int], b: list[int] | None, room: int) -> tuple[list[int], list[int]]:
    """Cut a (and b) to `room` tokens in all: the longer one loses its last token, repeatedly."""
    if b is None:
        return a[:room], []
    a, b = list(a), list(b)
    while len(a) + len(b) > room:
        (a if len(a) > len(b) else b).pop()
    return a, b


def classification_features(
    examples: Sequence[Example], tokenizer: WordPieceTokenizer, max_seq_length: int
) -> list[Feature]:
    """One feature per example; targets {"labels": id or score} when the example is labelled."""
    if max_seq_length < tokenizer.num_special_tokens(pair=True) + 1:
        raise ConfigError(f"max_seq_length={max_seq_length}: too short for [CLS]/[SEP] and text")
    texts_a = tokenizer.encode_batch([e.text_a for e in examples])
    texts_b = tokenizer.encode_batch([e.text_b or "" for e in examples])
    rooms = {pair: max_seq_length - tokenizer.num_special_tokens(pair) for pair in (False, True)}
    features = []
    for n, (example, a, b) in enumerate(zip(examples, texts_a, texts_b, strict=True)):
        single = example.text_b is None
        a, b = truncate_pair(a, None if single else b, rooms[not single])
        # The tokenizer's template: [CLS] a [SEP] b [SEP], RoBERTa's <s> a </s></s> b </s>, ...
        ids, types = tokenizer.build_inputs(a, None if single else b)
        targets = {} if example.label is None else {"labels": example.label}
        features.append(Feature(n, _ids(ids), np.asarray(types, dtype=np.int8), targets))
    return features


# ---------------------------------------------------------------- extractive QA


def answer_token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """First and last context token overlapping characters [char_start, char_end); (-1, -1) when
    none does. offsets: (N, 2) [start, end) of each context token."""
    inside = (offsets[:, 1] > char_start) & (offsets[:, 0] < char_end)  # (N,)
    hits = np.flatnonzero(inside)
    return (int(hits[0]), int(hits[-1])) if len(hits) else (-1, -1)


def window_starts(n_tokens: int, room: int, doc_stride: int) -> list[int]:
    """Where each window of `room` context tokens starts; the last one reaches the end."""
    starts, start = [0], 0
    while start + room < n_tokens:
        start += min(doc_stride, room)
        starts.append(start)
    return starts


def qa_features(
    examples: Sequence[QAExample],
    tokenizer: WordPieceTokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> list[Feature]:
    """Doc-stride windows of every question; the first answer (if any) gives the labels.

    An answerable question whose answer has no usable offset (the reader dropped it) gets no
    targets: such windows train nothing but are still predicted.
    """
    if doc_stride < 1:
        raise ConfigError(f"doc_stride={doc_stride}: must be >= 1")
    questions = tokenizer.encode_batch([e.question for e in examples])
    contexts = tokenizer.backend.encode_batch(
        [e.context for e in examples], add_special_tokens=False
    )  # with character offsets into each context
    features = []
    for n, example in enumerate(examples):
        question, context = questions[n][:max_query_length], contexts[n]
        # [CLS] question [SEP] window [SEP] (RoBERTa: <s> question </s></s> window </s>)
        room = max_seq_length - len(question) - tokenizer.num_special_tokens(pair=True)
        if room < 1:
            raise ConfigError(
                f"max_seq_length={max_seq_length} leaves no room for the context after a "
                f"{len(question)}-token question (max_query_length={max_query_length})"
            )
        ids, offsets = _ids(context.ids), np.asarray(context.offsets, dtype=np.int32).reshape(-1, 2)
        answer = (-1, -1)
        if example.answers:
            text, start = example.answers[0]
            answer = answer_token_span(offsets, start, start + len(text))
        labelled = example.is_impossible or answer[0] >= 0
        head = tokenizer.build_inputs(question, [-1])[0].index(-1)  # the window's first token
        for w0 in window_starts(len(ids), room, doc_stride):
            w1 = min(w0 + room, len(ids))  # window = context tokens [w0, w1)
            input_ids, types = tokenizer.build_inputs(question, ids[w0:w1].tolist())
            null = input_ids.index(tokenizer.cls_id)
            targets = {}
            if labelled:
                inside = not example.is_impossible and w0 <= answer[0] and answer[1] < w1
                s, e = (answer[0] - w0 + head, answer[1] - w0 + head) if inside else (null, null)
                targets = {"start_positions": s, "end_positions": e}
            types = np.asarray(types, dtype=np.int8)
            window = offsets[w0:w1]
            features.append(Feature(n, _ids(input_ids), types, targets, None, window, head, null))
    return features


# ---------------------------------------------------------------- tagging


def tag_ids(sentence: Sentence, labels: Sequence[str]) -> list[int]:
    """Tags -> label ids; an unknown tag is an InputError at its own line."""
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for k, tag in enumerate(sentence.tags):
        if tag not in index:
            message = f"unknown tag {tag!r}; valid tags: {', '.join(labels)}"
            raise InputError(message, sentence.path, sentence.line + k)
        out.append(index[tag])
    return out


def tagging_features(
    sentences: Sequence[Sentence],
    tokenizer: WordPieceTokenizer,
    max_seq_length: int,
    labels: Sequence[str] | None = None,
) -> list[Feature]:
    """Features of tagged sentences; with `labels`, targets {"labels": (T,) token label ids}."""
    room = max_seq_length - tokenizer.num_special_tokens()
    if room < 1:
        raise ConfigError(f"max_seq_length={max_seq_length}: too short for [CLS], [SEP] and a word")
    words = [list(s.words) for s in sentences]
    if tokenizer.kind == "bpe":  # byte-level words start with a space ("Ġ"), as RoBERTa reads
        words = [[" " + w for w in ws] for ws in words]  # split words (add_prefix_space=True)
    encodings = tokenizer.backend.encode_batch(
        words, is_pretokenized=True, add_special_tokens=False
    )
    features = []
    for n, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
        word_labels = tag_ids(sentence, labels) if labels is not None else None
        pieces: dict[int, list[int]] = {}  # word -> its sub-token ids (a word may have none)
        for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
            pieces.setdefault(word, []).append(token)
        chunk: list[tuple[int, list[int]]] = []
        for word in sorted(pieces):
            size = sum(len(p) for _, p in chunk)
            if chunk and size + len(pieces[word]) > room:
                features.append(_tagging_feature(n, chunk, word_labels, tokenizer))
                chunk = []
            chunk.append((word, pieces[word][:room]))
        if chunk or not features or features[-1].example != n:
            features.append(_tagging_feature(n, chunk, word_labels, tokenizer))
    return features


def _tagging_feature(n, chunk, word_labels, tokenizer) -> Feature:
    """The words' pieces inside the tokenizer's template: [CLS] .. [SEP], <s> .. </s>, or
    XLNet's .. <sep> <cls> (segment 2 on <cls>); specials are word -1, label -100."""
    pieces, words, piece_labels = [], [], []
    for word, word_pieces in chunk:
        pieces += word_pieces
        words += [word] * len(word_pieces)
        first = IGNORE_INDEX if word_labels is None else word_labels[word]
        piece_labels += [first] + [IGNORE_INDEX] * (len(word_pieces) - 1)
    ids, types = tokenizer.build_inputs(pieces)
    head = tokenizer.build_inputs([-1])[0].index(-1)  # where the first piece sits
    word_ids = np.full(len(ids), -1, dtype=np.int32)
    word_ids[head : head + len(pieces)] = words
    token_labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    token_labels[head : head + len(pieces)] = piece_labels
    targets = {} if word_labels is None else {"labels": token_labels}
    return Feature(n, _ids(ids), np.asarray(types, dtype=np.int8), targets, word_ids)


# ---------------------------------------------------------------- batches


def collate_features(features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest feature of the batch:
    input_ids, attention_mask, token_type_ids (B, T); each target (B,) or (B, T), -100 padding.
    Integer targets are int64, float targets (regression scores) float32."""
    if not features:
        raise ValueError("cannot collate an empty batch")
    B, T = len(features), max(len(f) for f in features)
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((B, T), dtype=np.int64)
    attention_mask = np.zeros((B, T), dtype=np.int64)
    for row, f in enumerate(features):
        input_ids[row, : len(f)] = f.input_ids
        token_type_ids[row, : len(f)] = f.token_type_ids
        attention_mask[row, : len(f)] = 1
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
    }
    for key in features[0].targets:
        values = [f.targets[key] for f in features]
        if isinstance(values[0], np.ndarray):
            padded = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
            for row, v in enumerate(values):
                padded[row, : len(v)] = v
            batch[key] = torch.from_numpy(padded)
        elif any(isinstance(v, float) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = torch.tensor(values, dtype=torch.int64)
    return batch


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Feature indices in batches of similar length.

    rng None (inference): sorted by length, longest first, then cut: the least padding.
    rng given (training): sortish, as the module docstring says; the order depends only on rng.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1")
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    mega = batch_size * MEGA_BATCH
    batches = []
    for m in range(0, len(order), mega):
        chunk = order[m : m + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class EpochBatches:
    """Training batches for `epochs` epochs, a new sortish order each epoch (seeded by
    (seed, epoch)), each made by `collate` from a list of features (anything with a len(): the
    WordPiece features here, data/word_features.py's words). Resumable: state_dict() is the
    (epoch, position) of the next batch."""

    def __init__(
        self,
        features: Sequence,
        batch_size: int,
        collate: Callable[[list], dict[str, torch.Tensor]],
        seed: int,
        epochs: int,
    ):
        if not features:
            raise InputError("no training examples (is the training file empty?)")
        self.features, self.batch_size, self.collate = features, batch_size, collate
        self.seed, self.epochs = seed, epochs
        self.lengths = [len(f) for f in features]
        self.steps_per_epoch = -(-len(features) // batch_size)
        self.epoch, self.position = 0, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while self.epoch < self.epochs:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = bucketed_batches(self.lengths, self.batch_size, rng)
            while self.position < len(order):
                indices = order[self.position]
                self.position += 1
                yield self.collate([self.features[i] for i in indices])
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def inference_batches(
    features: Sequence[Feature], batch_size: int, pad_id: int
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(feature indices, batch) sorted by length; put outputs back with the indices."""
    for indices in bucketed_batches([len(f) for f in features], batch_size):
        yield indices, collate_features([features[i] for i in indices], pad_id)
