"""Every tokenizer family behind one door: train one of a kind, read any tokenizer.json.

`tokenizers` saves the model type in tokenizer.json ("WordPiece", "BPE", "Unigram"); reading
dispatches on it (LOADERS), training on the kind (`muppets tokenizer train --kind`), and a model
type picks the style its tokenizer is trained in (styles.MODEL_TYPE_STYLES: RoBERTa's byte-level
BPE, as Liu et al. 2019 section 4.4; ALBERT's and XLNet's SentencePiece unigram).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from muppets.errors import InputError
from muppets.tokenization.backend import BackendTokenizer
from muppets.tokenization.bpe import load_bpe, train_bpe
from muppets.tokenization.styles import KIND_STYLES, KINDS, MODEL_TYPE_STYLES, STYLES, Style
from muppets.tokenization.unigram import load_unigram, train_unigram
from muppets.tokenization.wordpiece import load_tokenizer, train_wordpiece

# tokenizer.json's model type -> reader of (directory, file). WordPiece's reader also takes
# vocab.txt directories and tokenizer_config.json's do_lower_case.
LOADERS: dict[str, Callable[[Path, Path], BackendTokenizer]] = {
    "WordPiece": lambda directory, _: load_tokenizer(directory),
    "BPE": load_bpe,
    "Unigram": load_unigram,
}


# `tokenizers` writes the model's "type" first; its vocabulary follows, so the scan stops early.
_MODEL_TYPE = re.compile(r'"model"\s*:\s*\{\s*"type"\s*:\s*"(\w+)"')


def tokenizer_model(directory: Path) -> str | None:
    """The model type of directory/tokenizer.json ("WordPiece", "Unigram", ...), or None.

    Read by a scan of the text, not by parsing the JSON (30 ms of a 2 MB file, which the loader
    parses again); a file written otherwise (another key first) is parsed."""
    file = directory / "tokenizer.json"
    if not file.is_file():
        return None
    text = file.read_text(encoding="utf-8")
    if found := _MODEL_TYPE.search(text):
        return found.group(1)
    try:
        return json.loads(text)["model"]["type"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"cannot parse tokenizer.json: {error}", file) from None


def load_any_tokenizer(path: str | Path) -> BackendTokenizer:
    """A directory's tokenizer whatever its model (WordPiece, byte-level BPE, Unigram), or a
    vocab.txt file (wordpiece.load_tokenizer, with its messages)."""
    path = Path(path)
    model = tokenizer_model(path) if path.is_dir() else None
    if model is None:
        if path.is_dir() and (path / "spiece.model").is_file():
            raise InputError(
                "a SentencePiece spiece.model without tokenizer.json is not read: save the "
                "tokenizer with transformers' AlbertTokenizerFast.save_pretrained to write it",
                path / "spiece.model",
            )
        return load_tokenizer(path)
    if model not in LOADERS:
        raise InputError(
            f"tokenizer model type {model!r} is not read here; known: {', '.join(LOADERS)}",
            path / "tokenizer.json",
        )
    return LOADERS[model](path, path / "tokenizer.json")


def style_for(kind: str, model_type: str | None = None) -> Style:
    """The style a tokenizer of `kind` is trained in: the model type's when it is of that kind
    (kind "auto": the model type's, WordPiece without one), else the kind's first family's."""
    if kind == "auto":
        return STYLES[MODEL_TYPE_STYLES.get(model_type or "bert", "bert")]
    named = STYLES.get(MODEL_TYPE_STYLES.get(model_type or "", ""))
    return named if named is not None and named.kind == kind else STYLES[KIND_STYLES[kind]]


def family_note(model_type: str, tokenizer: BackendTokenizer) -> str | None:
    """A line for a model pretrained on another kind of tokenizer than its family's, else None."""
    style = STYLES.get(MODEL_TYPE_STYLES.get(model_type, ""))
    if style is None or style.kind == tokenizer.kind:
        return None
    return (
        f"note: a {model_type} model on a {tokenizer.kind} tokenizer; {model_type}'s own is "
        f"{style.kind} (muppets tokenizer train --model {model_type})"
    )


def train_any(
    style: Style,
    texts: Sequence[str] | Callable[[], Iterable[str]],
    vocab_size: int,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> BackendTokenizer:
    """Train a tokenizer of the style's kind. WordPiece reads the texts twice (pass a function),
    the others once; `limit_alphabet` is WordPiece's, `min_frequency` WordPiece's and BPE's;
    byte-level BPE never lowercases (RoBERTa is cased)."""
    if style.kind == "wordpiece":
        return train_wordpiece(texts, vocab_size, lowercase, min_frequency, limit_alphabet)
    if style.kind == "bpe":
        return train_bpe(texts, vocab_size, min_frequency, style)
    if style.kind == "unigram":
        return train_unigram(texts, vocab_size, lowercase, style)
    raise ValueError(f"unknown tokenizer kind {style.kind!r}; known: {', '.join(KINDS)}")
