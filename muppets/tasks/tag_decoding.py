"""Tag schemes (IOB1, IOB2 = BIO), repair of invalid BIO, entity spans, first-subword alignment.

IOB1 (CoNLL-2003's original `eng.*` files): a chunk's tokens are `I-X`; `B-X` only marks a chunk
that directly follows another chunk of the same type. IOB2/BIO: every chunk starts with `B-X`.

An `I-X` that cannot continue a chunk (after `O`, at the start, or after a tag of another type)
starts a new chunk, as conlleval and seqeval's default mode read it. `repair_bio` writes that
reading out as `B-X`, so repaired tags give the same entities as the raw ones; the same rewrite
turns IOB1 into IOB2.

`entity_spans` is a line-for-line port of seqeval's (1.2.2) default `get_entities` (conlleval
semantics, BIOES prefixes accepted), so that entity F1 in `metrics.py` equals seqeval's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


def split_tag(tag: str) -> tuple[str, str | None]:
    """Prefix and type: "B-PER" -> ("B", "PER"); "O" -> ("O", None); anything else: ValueError."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"{tag!r} is not a tag of the form O, B-X, I-X (or E-X, S-X)")


def invalid_bio_positions(tags: Sequence[str]) -> list[int]:
    """Positions of `I-X` tags that do not continue a chunk of type X (invalid in IOB2)."""
    bad, prev = [], (None, None)
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if prefix == "I" and (prev[0] not in ("B", "I") or prev[1] != kind):
            bad.append(i)
        prev = (prefix, kind)
    return bad


def repair_bio(tags: Sequence[str]) -> list[str]:
    """BIO with every chunk-starting `I-X` rewritten as `B-X` (new list; input unchanged)."""
    out = list(tags)
    for i in invalid_bio_positions(tags):
        out[i] = "B-" + tags[i][2:]
    return out


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2: each chunk's first `I-X` becomes `B-X` (IOB1's `B-X` stays `B-X`)."""
    return repair_bio(tags)


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """IOB2 -> IOB1: `B-X` stays only where it follows a chunk of the same type X."""
    out, prev = [], (None, None)
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "B" and not (prev[0] in ("B", "I") and prev[1] == kind):
            tag = "I-" + kind
        out.append(tag)
        prev = (prefix, kind)
    return out


def convert_tags(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Between schemes "iob1", "iob2" and "bio" (= "iob2")."""
    names = {"iob1": "iob1", "iob2": "iob2", "bio": "iob2"}
    for scheme in (source, target):
        if scheme not in names:
            raise ValueError(f"unknown tag scheme {scheme!r}; valid schemes: {', '.join(names)}")
    source, target = names[source], names[target]
    if source == target:
        return list(tags)
    return iob1_to_iob2(tags) if target == "iob2" else iob2_to_iob1(tags)


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks as (type, first, last) token positions (inclusive), exactly as seqeval's default
    `get_entities` finds them in one sequence (including its handling of invalid sequences)."""
    chunks, prev_tag, prev_type, begin = [], "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    # seqeval/metrics/sequence_labeling.py: end_of_chunk
    return (
        prev_tag in ("E", "S")
        or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
        or (prev_tag not in ("O", ".") and prev_type != type_)
    )


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    # seqeval/metrics/sequence_labeling.py: start_of_chunk
    return (
        tag in ("B", "S")
        or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
        or (tag not in ("O", ".") and prev_type != type_)
    )


def align_first_subword(
    word_ids: Sequence[int | None], word_labels: Sequence[int], ignore_index: int = IGNORE_INDEX
) -> list[int]:
    """Per-sub-token labels: a word's label on its first sub-token, `ignore_index` elsewhere
    (special tokens have word id None, later sub-tokens repeat their word's id).

    BERT (Devlin et al. 2019, section 5.3) predicts NER tags from each word's first sub-token.
    """
    out, prev = [], None
    for word in word_ids:
        if word is None or word == prev:
            out.append(ignore_index)
        else:
            if not 0 <= word < len(word_labels):
                raise ValueError(f"word id {word} is out of range for {len(word_labels)} words")
            out.append(word_labels[word])
        prev = word
    return out


def words_from_subwords(
    word_ids: Sequence[int | None],
    predictions: Sequence[T],
    num_words: int,
    fill: T | None = None,
) -> list[T | None]:
    """Word-level predictions: each word takes the prediction of its first sub-token.

    Words without a sub-token (cut off by truncation) get `fill`; count them with
    `words.count(fill)` to report them.
    """
    if len(word_ids) != len(predictions):
        raise ValueError(f"{len(word_ids)} word ids but {len(predictions)} predictions")
    out: list[T | None] = [fill] * num_words
    seen = [False] * num_words
    for word, prediction in zip(word_ids, predictions, strict=True):
        if word is not None and not seen[word]:
            out[word], seen[word] = prediction, True
    return out
