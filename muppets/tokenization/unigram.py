"""SentencePiece unigram tokenizers (ALBERT's, XLNet's): train, load, save, over `tokenizers`.

Kudo 2018, "Subword Regularization" (https://arxiv.org/abs/1804.10959); ALBERT (Lan et al. 2020,
section 4.1) tokenizes with a 30k SentencePiece unigram model. transformers' AlbertTokenizerFast
saves it as a tokenizer.json whose model is `Unigram`, with ALBERT's special tokens <pad>, <unk>,
[CLS], [SEP], [MASK] (tokenizer_config.json names each role; those names are the defaults); XLNet's
are <pad>, <unk>, <cls>, <sep>, <mask> with the <cls> at the end (styles.STYLES). A loaded file
keeps its normalizer, pre-tokenizer (Metaspace: "▁" marks a word start) and decoder; a trained one
gets AlbertTokenizer's (quotes, NFKD, accents stripped, lowercase; whitespace split, "▁" prepended).
The template is the style's, set with this vocabulary's ids. The interface is
WordPieceTokenizer's, so every recipe takes either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import Unigram

from muppets.errors import InputError
from muppets.tokenization.backend import BackendTokenizer
from muppets.tokenization.styles import STYLES, Style, style_of, tokenizer_config, trainer_tokens

ALBERT_SPECIAL_TOKENS = STYLES["albert"].roles
MODEL_MAX_LENGTH = 512
WORD_START = "\u2581"  # "▁", SentencePiece's whitespace marker
# google-research/albert create_pretraining_data.py, _is_start_piece: pieces that start a word.
_PUNCTUATION = set('!"#$%&"()*+,-./:;?@[\\]^_`{|}~')


class UnigramTokenizer(BackendTokenizer):
    """Text <-> ids over a `tokenizers.Tokenizer` whose model is Unigram (backend.BackendTokenizer),
    with the special tokens and template of its style (ALBERT's unless its files say else)."""

    kind = "unigram"

    def __init__(self, backend: Tokenizer, style: Style = STYLES["albert"], path: object = None):
        super().__init__(backend, style.roles, path, style.template)
        self.style = style

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
        """sha256 of the whole tokenizer.json (pieces, scores, normalizer, pre-tokenizer).
        Scores count to 12 digits: tokenizers' JSON reader can move a score's last bit, so a
        saved and re-read tokenizer would otherwise differ from the one that wrote it."""
        state = json.loads(self.backend.to_str())
        pieces = state["model"]["vocab"]
        state["model"]["vocab"] = [[piece, float(f"{score:.12g}")] for piece, score in pieces]
        text = json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> None:
        """tokenizer.json, tokenizer_config.json and special_tokens_map.json, as the style's
        transformers tokenizer (AlbertTokenizerFast, XLNetTokenizerFast) saves them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        config = tokenizer_config(self.style, self.lowercase, MODEL_MAX_LENGTH)
        roles = {k: v for k, v in config.items() if k.endswith("_token")}
        files = {"tokenizer_config.json": config, "special_tokens_map.json": roles}
        for name, content in files.items():
            (directory / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def sentencepiece_backend(model: Unigram, lowercase: bool) -> Tokenizer:
    """AlbertTokenizer's pipeline around a Unigram model (post-processor set by BackendTokenizer):
    `` and '' -> ", NFKD, accents stripped, lowercase; split at whitespace, "▁" before each word."""
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    steps += [normalizers.NFKD(), normalizers.StripAccents()]
    steps += [normalizers.Lowercase()] if lowercase else []
    backend = Tokenizer(model)
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always"),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=WORD_START, prepend_scheme="always")
    return backend


def train_unigram(
    texts: Sequence[str] | Callable[[], Iterable[str]],
    vocab_size: int = 30000,
    lowercase: bool = True,
    style: Style = STYLES["albert"],
    max_piece_length: int = 16,
    show_progress: bool = False,
) -> UnigramTokenizer:
    """Learn a SentencePiece unigram vocabulary (EM over a seed set, pruned to `vocab_size`),
    the style's special tokens at ids 0.. and the unknown token its role names.

    The same texts give the same tokenizer in every process: the trainer visits the words in
    hash-map order, so the sums behind each score differ in their last bits from process to
    process, and pieces of equal score come out in any order (5 processes, 5 orders on the
    bundled sample). Scores are rounded to 6 decimals (the noise is ~1e-14) and the pieces
    sorted by score, then by code point; the rare characters the trainer adds last get their
    scores in code-point order (_order_added_characters).
    """
    backend = sentencepiece_backend(Unigram(), lowercase)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=trainer_tokens(style),
        unk_token=style.roles[1],
        max_piece_length=max_piece_length,
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts() if callable(texts) else texts, trainer)
    specials = set(style.tokens)
    pieces = _order_added_characters(json.loads(backend.to_str())["model"]["vocab"])
    rest = sorted((-round(score, 6), piece) for piece, score in pieces if piece not in specials)
    vocab = [(t, 0.0) for t in style.tokens] + [(piece, -score) for score, piece in rest]
    model = Unigram(vocab, unk_id=style.tokens.index(style.roles[1]), byte_fallback=False)
    backend = sentencepiece_backend(model, lowercase)
    backend.add_special_tokens(trainer_tokens(style))
    return UnigramTokenizer(backend, style)


_PENALTY_STEP = 1e-4  # tokenizers' UnigramTrainer::finalize, min_score_penalty_delta


def _order_added_characters(pieces: list[list]) -> list[list]:
    """The trainer's pieces with its added characters' scores handed out in code-point order.

    UnigramTrainer::finalize (tokenizers, models/unigram/trainer.rs) adds each character of the
    corpus that the model lacks with the score min_score + k * 1e-4, k = 0, 1, ..., in the order
    of a hash set, which differs from process to process (3 processes, 3 orders of 10 characters
    on the bundled valid text at 800 pieces). The ladder is k = 0 (the lowest score, shared with
    the model's rarest pieces, some 1e-10 above it) and the unbroken run k = 1, 2, ... above it;
    its single-character pieces get the same scores again, the lowest to the first code point.
    """
    low = min(score for _, score in pieces)
    rungs: dict[int, list[int]] = {}  # k -> indices of single characters at low + k * step
    for i, (piece, score) in enumerate(pieces):
        k = round((score - low) / _PENALTY_STEP)
        # 1e-7: far above the scores' noise (~1e-14), far below the step
        if len(piece) == 1 and abs(score - low - k * _PENALTY_STEP) < 1e-7:
            rungs.setdefault(k, []).append(i)
    ladder = list(rungs.get(0, []))
    k = 1
    while len(rungs.get(k, ())) == 1:  # the trainer adds one character per rung above 0
        ladder += rungs[k]
        k += 1
    chars = sorted(pieces[i][0] for i in ladder)
    ordered = dict(zip(chars, sorted(pieces[i][1] for i in ladder), strict=True))
    return [[piece, ordered.get(piece, score)] for piece, score in pieces]


def load_unigram(directory: Path, file: Path) -> UnigramTokenizer:
    """A Unigram tokenizer.json (directory/tokenizer.json) with the roles its configs name."""
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as error:  # the Rust parser raises plain Exception
        raise InputError(f"cannot parse tokenizer.json: {error}", file) from error
    if not isinstance(backend.model, Unigram):
        raise InputError(f"not a Unigram tokenizer (model {type(backend.model).__name__})", file)
    return UnigramTokenizer(backend, style_of(directory, "unigram"), path=file)
