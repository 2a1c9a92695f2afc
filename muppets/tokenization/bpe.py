"""Byte-level BPE (RoBERTa, GPT-2 style): train, load, save, on the `tokenizers` backend.

Sennrich et al. 2016 (BPE); Radford et al. 2019 (GPT-2: BPE over the 256 bytes, so no text is
unknown); Liu et al. 2019 (RoBERTa, section 4.4: a 50K byte-level BPE vocabulary instead of
BERT's 30K WordPiece). The pipeline is transformers' RobertaTokenizer: no normalizer, the ByteLevel
pre-tokenizer (GPT-2's split regex; a space becomes the "Ġ" that starts the next piece; no space
added in front of the text unless add_prefix_space), BPE without continuation prefix, ByteLevel
decoder, and `<s> A </s></s> B </s>` with offsets trimmed of the spaces (RobertaProcessing).
A directory written by `save` loads in RobertaTokenizer(Fast) and AutoTokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE

from muppets.errors import InputError
from muppets.tokenization.backend import BackendTokenizer
from muppets.tokenization.styles import STYLES, Style, style_of, tokenizer_config, trainer_tokens

WORD_START = "\u0120"  # "Ġ": the byte-level spelling of the space that opens a word
MODEL_MAX_LENGTH = 512  # roberta-base's (514 position rows, 2 spent on the pad offset)
# google-research/albert create_pretraining_data.py, _is_start_piece: punctuation starts a word.
_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class BPETokenizer(BackendTokenizer):
    """Text <-> ids over a `tokenizers.Tokenizer` whose model is BPE (backend.BackendTokenizer),
    with the special tokens and template of its style (RoBERTa's unless its files say else)."""

    kind = "bpe"

    def __init__(self, backend: Tokenizer, style: Style = STYLES["roberta"], path: object = None):
        super().__init__(backend, style.roles, path, style.template)
        self.style = style

    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for pieces that continue a word. A piece starts a word when it
        opens with "Ġ" (a space before it), is a special token or starts with ASCII punctuation
        (as ALBERT's _is_start_piece treats SentencePiece pieces); a text's first piece, which has
        no "Ġ", starts a word because nothing but a special token comes before it."""
        specials = set(self.special_tokens)
        return np.array(
            [
                not (t.startswith(WORD_START) or t[:1] in _PUNCTUATION or t in specials)
                for t in self._tokens
            ]
        )

    def fingerprint(self) -> str:
        """sha256 of the whole tokenizer.json (vocabulary, merges, pre-tokenizer, added tokens).
        No affix and an empty one are the same (RobertaTokenizerFast saves "" where the trainer
        leaves null)."""
        state = json.loads(self.backend.to_str())
        for affix in ("continuing_subword_prefix", "end_of_word_suffix"):
            state["model"][affix] = state["model"].get(affix) or ""
        text = json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> None:
        """tokenizer.json, vocab.json + merges.txt (GPT-2's files) and the configs, as
        RobertaTokenizerFast.save_pretrained writes them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        self.backend.model.save(str(directory))  # vocab.json, merges.txt
        config = tokenizer_config(self.style, self.lowercase, MODEL_MAX_LENGTH)
        roles = {k: v for k, v in config.items() if k.endswith("_token")}
        files = {"tokenizer_config.json": config, "special_tokens_map.json": roles}
        for name, content in files.items():
            (directory / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def byte_level_backend(model: BPE, add_prefix_space: bool = False) -> Tokenizer:
    """RobertaTokenizer's pipeline around a BPE model (post-processor set by BackendTokenizer)."""
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    return backend


def train_bpe(
    texts: Sequence[str] | Callable[[], Iterable[str]],
    vocab_size: int = 50265,
    min_frequency: int = 2,
    style: Style = STYLES["roberta"],
    add_prefix_space: bool = False,
    show_progress: bool = False,
) -> BPETokenizer:
    """Learn a byte-level BPE vocabulary: the style's special tokens at ids 0.., the 256 byte
    symbols, then merges by frequency until `vocab_size` (fewer when the corpus runs out).

    The same texts give the same vocabulary in every process (tests/test_tokenizer_families.py
    runs several): the trainer's alphabet is sorted and equally frequent merges are taken in pair
    order, so tokenizers#1794 (WordPiece's hash-map order) does not reach BPE.
    """
    backend = byte_level_backend(BPE(), add_prefix_space)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=trainer_tokens(style),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts() if callable(texts) else texts, trainer)
    return BPETokenizer(backend, style)


def load_bpe(directory: Path, file: Path) -> BPETokenizer:
    """A BPE tokenizer.json (directory/tokenizer.json) with the roles its configs name."""
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as error:  # the Rust parser raises plain Exception
        raise InputError(f"cannot parse tokenizer.json: {error}", file) from error
    if not isinstance(backend.model, BPE):
        raise InputError(f"not a BPE tokenizer (model {type(backend.model).__name__})", file)
    return BPETokenizer(backend, style_of(directory, "bpe"), path=file)
