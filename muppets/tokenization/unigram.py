"""SentencePiece unigram tokenizers (ALBERT's), read from a Hugging Face tokenizer.json.

Kudo 2018, "Subword Regularization" (https://arxiv.org/abs/1804.10959); ALBERT (Lan et al. 2020,
section 4.1) tokenizes with a 30k SentencePiece unigram model. transformers' AlbertTokenizerFast
saves it as a tokenizer.json whose model is `Unigram`, with ALBERT's special tokens <pad>, <unk>,
[CLS], [SEP], [MASK] (tokenizer_config.json names each role; those names are the defaults). The
normalizer, pre-tokenizer (Metaspace, "▁" marks a word start) and decoder are the file's own; the
[CLS] A [SEP] (B [SEP]) template is set here with this vocabulary's ids, as AlbertTokenizer
builds its inputs. The interface is WordPieceTokenizer's, so every recipe takes either.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import Unigram

from muppets.errors import InputError
from muppets.tokenization.backend import BackendTokenizer
from muppets.tokenization.wordpiece import WordPieceTokenizer, load_tokenizer

ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
ALBERT_SPECIAL_TOKENS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
WORD_START = "\u2581"  # "▁", SentencePiece's whitespace marker
# google-research/albert create_pretraining_data.py, _is_start_piece: pieces that start a word.
_PUNCTUATION = set('!"#$%&"()*+,-./:;?@[\\]^_`{|}~')


class UnigramTokenizer(BackendTokenizer):
    """Text <-> ids over a `tokenizers.Tokenizer` whose model is Unigram (backend.BackendTokenizer),
    with the special tokens its files name."""

    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for pieces that continue a word (whole-word and n-gram
        masking keep them with the piece before). google-research/albert's _is_start_piece:
        a piece starting with "▁" or "<", or one punctuation character, starts a word."""
        return np.array(
            [
                not (t.startswith((WORD_START, "<")) or t in _PUNCTUATION)
                and t not in self.special_tokens
                for t in self._tokens
            ]
        )

    def fingerprint(self) -> str:
        """sha256 of the whole tokenizer.json (pieces, scores, normalizer, pre-tokenizer)."""
        state = json.loads(self.backend.to_str())
        text = json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> None:
        """tokenizer.json and tokenizer_config.json, as AlbertTokenizerFast.save_pretrained."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        roles = dict(zip(ROLES, self.special_tokens, strict=True))
        config = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": self.lowercase, **roles}
        text = json.dumps(config, indent=2) + "\n"
        (directory / "tokenizer_config.json").write_text(text, encoding="utf-8")


def _special_tokens(directory: Path) -> tuple[str, ...]:
    """The five roles' tokens from tokenizer_config.json / special_tokens_map.json (a value may be
    a string or {"content": ...}), ALBERT's where neither names one."""
    named: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / name
        if not path.is_file():
            continue
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise InputError(f"not valid JSON: {error}", path) from None
        for role in ROLES:
            value = values.get(role) if isinstance(values, dict) else None
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                named[role] = value
    return tuple(named.get(r, d) for r, d in zip(ROLES, ALBERT_SPECIAL_TOKENS, strict=True))


def tokenizer_model(directory: Path) -> str | None:
    """The model type of directory/tokenizer.json ("WordPiece", "Unigram", ...), or None."""
    file = directory / "tokenizer.json"
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))["model"]["type"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"cannot parse tokenizer.json: {error}", file) from None


def load_unigram(directory: str | Path) -> UnigramTokenizer:
    directory = Path(directory)
    file = directory / "tokenizer.json"
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as error:  # the Rust parser raises plain Exception
        raise InputError(f"cannot parse tokenizer.json: {error}", file) from error
    if not isinstance(backend.model, Unigram):
        raise InputError(f"not a Unigram tokenizer (model {type(backend.model).__name__})", file)
    return UnigramTokenizer(backend, _special_tokens(directory), path=file)


def load_any_tokenizer(path: str | Path) -> WordPieceTokenizer | UnigramTokenizer:
    """A directory's tokenizer whatever its model: a Unigram tokenizer.json (ALBERT's), else
    WordPiece (wordpiece.load_tokenizer, with its messages)."""
    path = Path(path)
    if path.is_dir() and tokenizer_model(path) == "Unigram":
        return load_unigram(path)
    if path.is_dir() and (path / "spiece.model").is_file() and tokenizer_model(path) is None:
        raise InputError(
            "a SentencePiece spiece.model without tokenizer.json is not read: save the "
            "tokenizer with transformers' AlbertTokenizerFast.save_pretrained to write it",
            path / "spiece.model",
        )
    return load_tokenizer(path)
