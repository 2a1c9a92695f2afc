"""Phrases from collocation statistics: the built-in phrase source for ERNIE's phrase masking.

Mikolov et al. 2013, "Distributed Representations of Words and Phrases and their
Compositionality", section 4: a bigram "a b" becomes a phrase when

    score(a, b) = (count(ab) - delta) / (count(a) * count(b))

is above a threshold; delta "prevents too many phrases consisting of very infrequent words", and
running 2-4 passes over the data with a decreasing threshold "allows longer phrases that consist
of several words to be formed". As their word2phrase.c we scale the score by the number of words
N (so one threshold fits corpora of any size; score * N is the pointwise ratio
p(ab) / (p(a) p(b)) up to delta), treat a word seen fewer than delta times as never part of a
phrase, and join greedily left to right: a word joined to its left neighbour is not joined to its
right one in the same pass. Pass k runs over the words pass k - 1 produced ("new_york" is one word
in pass 2, so "new_york city" can become a three-word phrase).

Words are runs of letters and digits (`\\w+`), lowercased; punctuation splits them and never
joins a phrase, and phrases never cross a sentence. Pure functions over strings; the counts of a
pass are plain dicts (memory grows with the distinct bigrams of the corpus).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from muppets.errors import InputError

_WORD = re.compile(r"\w+")
_GLUE = "\x1f"  # joins the words of a phrase into one key (never inside \w+)


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lowercased word) of every word of `text`; gaps that hold anything but
    spaces (punctuation) are barriers, marked by a None word between the two words."""
    spans: list = []
    last = 0
    for m in _WORD.finditer(text):
        if spans and text[last : m.start()].strip():
            spans.append(None)  # punctuation between two words: no phrase across it
        spans.append((m.start(), m.end(), m.group().lower()))
        last = m.end()
    return spans


def phrase_score(count_ab: int, count_a: int, count_b: int, delta: float) -> float:
    """Mikolov et al. 2013, eq. 6: (count(ab) - delta) / (count(a) * count(b))."""
    return (count_ab - delta) / (count_a * count_b)


@dataclass
class PhraseModel:
    """The bigrams joined in each pass (keys: words, or phrases glued with _GLUE)."""

    delta: float = 5.0
    thresholds: tuple[float, ...] = (100.0, 50.0)  # word2phrase's example scripts: 200, 100
    passes: list[set[tuple[str, str]]] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        """The phrases of every pass as JSON (a held-out set is prepared with the same ones)."""
        body = {
            "delta": self.delta,
            "thresholds": list(self.thresholds),
            "passes": [sorted(p) for p in self.passes],
        }
        Path(path).write_text(json.dumps(body, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PhraseModel:
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
            passes = [{(str(a), str(b)) for a, b in p} for p in body["passes"]]
            return cls(float(body["delta"]), tuple(body["thresholds"]), passes)
        except FileNotFoundError:
            raise InputError("no such file (prepare --phrases writes it)", path) from None
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"not a phrases file of prepare --phrases ({e})", path) from None

    def to_dict(self) -> dict:
        return {
            "method": "Mikolov et al. 2013 phrase scoring, scaled by the number of words",
            "delta": self.delta,
            "thresholds": list(self.thresholds),
            "phrases_per_pass": [len(p) for p in self.passes],
        }


def _join(words: list, pairs: set[tuple[str, str]]) -> list:
    """One pass of greedy left-to-right joining; items are (start, end, key) or None."""
    out: list = []
    i = 0
    while i < len(words):
        a = words[i]
        b = words[i + 1] if i + 1 < len(words) else None
        if a is not None and b is not None and (a[2], b[2]) in pairs:
            out.append((a[0], b[1], a[2] + _GLUE + b[2]))
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def count_pass(sentences: Iterable[str], model: PhraseModel) -> tuple[Counter, Counter, int]:
    """(unigram counts, bigram counts, number of words) after the passes learned so far."""
    unigrams: Counter = Counter()
    bigrams: Counter = Counter()
    total = 0
    for sentence in sentences:
        words = word_spans(sentence)
        for pairs in model.passes:
            words = _join(words, pairs)
        keys = [w[2] if w is not None else None for w in words]
        unigrams.update(k for k in keys if k is not None)
        bigrams.update(zip(keys[:-1], keys[1:], strict=True))
        total += sum(k is not None for k in keys)
    bigrams.pop((None, None), None)
    return unigrams, bigrams, total


def select_pairs(
    unigrams: Counter, bigrams: Counter, total: int, delta: float, threshold: float
) -> dict[tuple[str, str], float]:
    """The bigrams whose scaled score passes `threshold`, with their (scaled) scores."""
    chosen = {}
    for (a, b), count in bigrams.items():
        if a is None or b is None or unigrams[a] < delta or unigrams[b] < delta:
            continue
        score = phrase_score(count, unigrams[a], unigrams[b], delta) * total
        if score > threshold:
            chosen[(a, b)] = score
    return chosen


def learn_phrases(
    sentences: Callable[[], Iterable[str]],
    delta: float = 5.0,
    thresholds: tuple[float, ...] = (100.0, 50.0),
) -> PhraseModel:
    """One pass over `sentences()` per threshold (each call must yield the same sentences)."""
    model = PhraseModel(delta, tuple(thresholds))
    for threshold in thresholds:
        unigrams, bigrams, total = count_pass(sentences(), model)
        model.passes.append(set(select_pairs(unigrams, bigrams, total, delta, threshold)))
    return model


def find_phrases(text: str, model: PhraseModel) -> list[tuple[int, int]]:
    """(start, end) character spans of the phrases (two words or more) in `text`."""
    words = word_spans(text)
    for pairs in model.passes:
        words = _join(words, pairs)
    return [(w[0], w[1]) for w in words if w is not None and _GLUE in w[2]]
