"""Word vocabulary of the biLM's softmax: the words ELMo predicts (its inputs are characters).

The file format is bilm-tf's vocabulary file (bilm/data.py, Vocabulary): one token per line, line
n holding id n - 1, with "<S>", "</S>" and "<UNK>" somewhere in it; so the released
vocab-2016-09-10.txt of the 1B Word Benchmark loads as is. A vocabulary built here also holds
"<PAD>" (id 0), the padding id of the non-contextual word-embedding baseline; bilm-tf files have
none and then pad_id is None. Words are ordered by count, most frequent first, as the adaptive
softmax (Grave et al. 2017) and bilm-tf's sampled softmax (log-uniform sampler) both assume.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from muppets.errors import InputError

PAD_TOKEN = "<PAD>"
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"
UNK_TOKEN = "<UNK>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0..3 of a built vocabulary


def _bad_token(token: str) -> str | None:
    """Why `token` cannot be a line of a vocabulary file, or None."""
    if not token:
        return "empty token"
    if any(c.isspace() for c in token):
        return f"token {token!r} contains whitespace"
    return None


class WordVocabulary:
    """Words <-> ids. `path` only labels errors (the file the tokens came from)."""

    def __init__(self, tokens: list[str], path: object = None):
        index: dict[str, int] = {}
        for i, token in enumerate(tokens):
            problem = _bad_token(token)
            if problem is None and token in index:
                problem = f"duplicate token {token!r} (first on line {index[token] + 1})"
            if problem is not None:
                raise InputError(problem, path, i + 1 if path is not None else None)
            index[token] = i
        missing = [t for t in (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN) if t not in index]
        if missing:
            raise InputError(f"vocabulary lacks the special token(s) {', '.join(missing)}", path)
        self.tokens = list(tokens)
        self._index = index
        self.bos_id = index[BOS_TOKEN]
        self.eos_id = index[EOS_TOKEN]
        self.unk_id = index[UNK_TOKEN]
        self.pad_id = index.get(PAD_TOKEN)

    def __len__(self) -> int:
        return len(self.tokens)

    def token_to_id(self, token: str) -> int:
        return self._index.get(token, self.unk_id)

    def id_to_token(self, i: int) -> str:
        return self.tokens[i]

    def encode(self, tokens: Iterable[str], add_sentence_boundaries: bool = True) -> list[int]:
        """Word ids of one sentence, <S> ... </S> by default (the biLM's targets include </S>
        and, for the backward LM, <S>: bilm-tf LMDataset)."""
        ids = [self.token_to_id(t) for t in tokens]
        return [self.bos_id, *ids, self.eos_id] if add_sentence_boundaries else ids

    def save(self, path: str | Path) -> None:
        """One token per line, UTF-8, final newline."""
        Path(path).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WordVocabulary:
        """Read a file written by `save` or a bilm-tf vocabulary; errors name path:line."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            line = Path(path).read_bytes()[: error.start].count(b"\n") + 1
            raise InputError("not UTF-8 text", path, line) from None
        except OSError as error:
            raise InputError(f"cannot read the vocabulary: {error.strerror}", path) from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        return cls([line.removesuffix("\r") for line in lines], path)


def build_word_vocabulary(
    counts: Mapping[str, int], min_count: int = 1, max_size: int | None = None
) -> WordVocabulary:
    """<PAD> <S> </S> <UNK>, then the words seen at least min_count times, most frequent first
    (ties in string order, so the result does not depend on the order of `counts`). max_size
    bounds the whole vocabulary, special tokens included; the rest of the words become <UNK>."""
    if min_count < 1:
        raise InputError(f"min_count={min_count}: must be at least 1")
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise InputError(f"max_size={max_size}: must be at least {len(SPECIAL_TOKENS)}")
    for token in counts:
        problem = _bad_token(token)
        if problem is not None:
            raise InputError(f"cannot build a word vocabulary: {problem}")
    words = [w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS]
    words.sort(key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max_size - len(SPECIAL_TOKENS)]
    return WordVocabulary([*SPECIAL_TOKENS, *words])
