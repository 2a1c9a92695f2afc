"""WordPiece (BERT) tokenizer: train, load, save, encode, on the Hugging Face `tokenizers` backend.

Behaviour is exactly `transformers.BertTokenizerFast` for the same vocabulary and `do_lower_case`:
BertNormalizer (clean text, split CJK characters, lowercase, strip accents iff lowercasing), the
BERT pre-tokenizer (split on whitespace and every punctuation character), greedy longest-match-first
WordPiece with "##" continuations, and words over 100 characters -> [UNK]
(google-research/bert tokenization.py). A directory written by `save` loads in BertTokenizerFast and
in the slow Python BertTokenizer, and an existing BERT vocab.txt keeps its original ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import WordPiece

from muppets.errors import InputError
from muppets.tokenization.backend import BackendTokenizer

# A trained vocabulary puts these at ids 0..4 in this order; a loaded one keeps its own ids.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION_PREFIX = "##"
MODEL_MAX_LENGTH = 512  # position embeddings of every BERT-family preset


def _bert_normalizer(lowercase: bool) -> normalizers.BertNormalizer:
    # strip_accents=None means "strip iff lowercase", as BertTokenizerFast passes it.
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )


def _bert_backend(model: WordPiece, lowercase: bool) -> Tokenizer:
    """The pipeline of BertTokenizerFast around a WordPiece model (post-processor set later)."""
    backend = Tokenizer(model)
    backend.normalizer = _bert_normalizer(lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    return backend


class WordPieceTokenizer(BackendTokenizer):
    """Text <-> ids over a `tokenizers.Tokenizer` whose model is WordPiece, with BERT's special
    tokens (backend.BackendTokenizer); "##" pieces continue a word."""

    kind = "wordpiece"

    def __init__(self, backend: Tokenizer, path: object = None):
        super().__init__(backend, SPECIAL_TOKENS, path)

    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for "##" pieces, which whole-word masking keeps with the piece
        before them (google-research/bert create_pretraining_data.py: token.startswith("##"))."""
        return np.array([token.startswith(CONTINUATION_PREFIX) for token in self._tokens])

    def fingerprint(self) -> str:
        """sha256 of everything that decides the ids: vocabulary, normalizer, pre-tokenizer,
        WordPiece settings and added tokens. Used to tell whether tokenized shards are stale."""
        state = json.loads(self.backend.to_str())
        model = {key: value for key, value in state["model"].items() if key != "vocab"}
        payload = {
            "tokens": self._tokens,
            "model": model,
            "normalizer": state["normalizer"],
            "pre_tokenizer": state["pre_tokenizer"],
            "added_tokens": state["added_tokens"],
        }
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        # One token per line in id order: the line number is the id (BERT's vocab.txt format).
        with open(directory / "vocab.txt", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(token + "\n" for token in self._tokens)
        names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
        special_map = dict(zip(names, SPECIAL_TOKENS, strict=True))
        normalizer = self.backend.normalizer
        bert = isinstance(normalizer, normalizers.BertNormalizer)
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": normalizer.strip_accents if bert else None,
            "tokenize_chinese_chars": normalizer.handle_chinese_chars if bert else True,
            "model_max_length": MODEL_MAX_LENGTH,
            **special_map,
        }
        files = {"tokenizer_config.json": config, "special_tokens_map.json": special_map}
        for name, content in files.items():
            (directory / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def train_wordpiece(
    texts: Sequence[str] | Callable[[], Iterable[str]],
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    show_progress: bool = False,
) -> WordPieceTokenizer:
    """Learn a WordPiece vocabulary from texts (a list, or a function that streams them: read
    twice, never held in memory).

    Special tokens take ids 0..4; the vocabulary is smaller than `vocab_size` only when the corpus
    runs out of merges. The same texts give the same vocabulary in every process: the `tokenizers`
    trainer numbers "##" continuation characters in hash-map order and breaks ties between equally
    frequent merges by those numbers (huggingface/tokenizers#1794), so a first pass finds the
    continuation characters and the second gives them fixed, sorted ids up front, as special tokens
    (they are in the vocabulary either way; `vocab_size` counts them the same).
    """

    def train(extra: list[str], size: int) -> dict[str, int]:
        backend = _bert_backend(WordPiece(unk_token="[UNK]"), lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            special_tokens=[*SPECIAL_TOKENS, *extra],
            continuing_subword_prefix=CONTINUATION_PREFIX,
            show_progress=show_progress,
        )
        backend.train_from_iterator(texts() if callable(texts) else texts, trainer)
        return backend.get_vocab(with_added_tokens=True)

    if isinstance(texts, Iterator):
        raise TypeError("train_wordpiece reads the texts twice: pass a list or a function")
    alphabet = train([], 0)  # no merges: the kept characters and their continuations
    continuations = sorted(t for t in alphabet if t.startswith(CONTINUATION_PREFIX))
    ordered = canonical_order(train(continuations, vocab_size))
    model = WordPiece(
        {token: i for i, token in enumerate(ordered)},
        unk_token="[UNK]",
        continuing_subword_prefix=CONTINUATION_PREFIX,
    )
    return WordPieceTokenizer(_bert_backend(model, lowercase))


def canonical_order(vocab: dict[str, int]) -> list[str]:
    """The trained tokens in an order that depends only on the set: the specials, then shorter
    pieces before longer, word starts before "##" continuations, then by code point.

    The `tokenizers` trainer numbers the set it learns in hash-map order (3 runs on the bundled
    sample: 3 orders), so ids, and every model trained on them, differed from run to run.
    WordPiece's longest-match-first encoding does not depend on the ids.
    """
    rest = [token for token in vocab if token not in SPECIAL_TOKENS]
    rest.sort(
        key=lambda token: (
            len(token.removeprefix(CONTINUATION_PREFIX)),
            token.startswith(CONTINUATION_PREFIX),
            token,
        )
    )
    return [*SPECIAL_TOKENS, *rest]


def load_tokenizer(path: str | Path, lowercase: bool | None = None) -> WordPieceTokenizer:
    """Load a directory (tokenizer.json, else vocab.txt) or a vocab.txt file.

    Lowercasing: `lowercase` if given, else tokenizer_config.json's "do_lower_case" (which wins over
    tokenizer.json, as in transformers), else tokenizer.json's normalizer, else True.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no tokenizer here (expected a directory or a vocab.txt file)", path)
    if path.is_dir():
        if lowercase is None:
            lowercase = _read_do_lower_case(path / "tokenizer_config.json")
        if (path / "tokenizer.json").is_file():
            return _load_tokenizer_json(path / "tokenizer.json", lowercase)
        if not (path / "vocab.txt").is_file():
            raise InputError("directory has neither tokenizer.json nor vocab.txt", path)
        path = path / "vocab.txt"
    return _load_vocab_txt(path, True if lowercase is None else lowercase)


def _read_do_lower_case(config_file: Path) -> bool | None:
    if not config_file.is_file():
        return None
    try:
        value = json.loads(config_file.read_text(encoding="utf-8")).get("do_lower_case")
    except (ValueError, AttributeError) as error:
        raise InputError(f"not a JSON object: {error}", config_file) from error
    if value is not None and not isinstance(value, bool):
        raise InputError(f'"do_lower_case" must be true or false, not {value!r}', config_file)
    return value


def _load_tokenizer_json(file: Path, lowercase: bool | None) -> WordPieceTokenizer:
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as error:  # the Rust parser raises plain Exception
        raise InputError(f"cannot parse tokenizer.json: {error}", file) from error
    if not isinstance(backend.model, WordPiece):
        raise InputError(f"not a WordPiece tokenizer (model {type(backend.model).__name__})", file)
    if lowercase is not None:
        if not isinstance(backend.normalizer, normalizers.BertNormalizer):
            raise InputError("lowercasing can only be set on a BertNormalizer", file)
        backend.normalizer.lowercase = lowercase
    return WordPieceTokenizer(backend, path=file)


def _load_vocab_txt(file: Path, lowercase: bool) -> WordPieceTokenizer:
    # Line n (from 1) holds the token with id n-1. Universal newlines and stripping only "\n",
    # exactly as transformers' load_vocab, so ids match those of any BERT checkpoint.
    vocab: dict[str, int] = {}
    try:
        with open(file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                token = line.rstrip("\n")
                if not token:
                    raise InputError("empty line (one token per line)", file, i + 1)
                if token in vocab:
                    message = f"duplicate token {token!r} (first on line {vocab[token] + 1})"
                    raise InputError(message, file, i + 1)
                vocab[token] = i
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text: {error}", file) from error
    if not vocab:
        raise InputError("empty vocabulary", file)
    model = WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix=CONTINUATION_PREFIX)
    return WordPieceTokenizer(_bert_backend(model, lowercase), path=file)
