"""What every tokenizer family here shares: a `tokenizers.Tokenizer` with five special-token
roles (pad, unk, cls, sep, mask) at known ids and a template that puts them around one or two texts
(styles.POST_PROCESSORS: BERT's [CLS] A [SEP] (B [SEP]) unless the style says otherwise).

The family classes (wordpiece.WordPieceTokenizer, bpe.BPETokenizer, unigram.UnigramTokenizer) add
what differs: their special tokens' spellings, which pieces continue a word, fingerprint and files.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, pre_tokenizers

from muppets.errors import InputError
from muppets.tokenization.styles import POST_PROCESSORS, TEMPLATES


class BackendTokenizer:
    """Text <-> ids over `backend`. `special_tokens`: the pad, unk, cls, sep and mask tokens, in
    that order. `path` only labels errors (the file the backend came from). `template`: a key of
    styles.POST_PROCESSORS. The backend gets the special tokens and that template's post-processor
    with this vocabulary's ids set on it."""

    backend: Tokenizer
    kind: str  # "wordpiece", "bpe" or "unigram" (styles.KINDS)
    lowercase: bool
    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    special_ids: frozenset[int]

    def __init__(
        self,
        backend: Tokenizer,
        special_tokens: tuple[str, ...],
        path: object = None,
        template: str = "bert",
    ):
        vocab = backend.get_vocab(with_added_tokens=True)
        missing = [token for token in special_tokens if token not in vocab]
        if missing:
            raise InputError(f"vocabulary lacks the special token(s) {', '.join(missing)}", path)
        tokens: list[str | None] = [None] * len(vocab)  # id order, in one pass (no sort)
        for token, i in vocab.items():
            if 0 <= i < len(tokens):
                tokens[i] = token
        if None in tokens:  # an id out of range, hence a gap (or two tokens on one id)
            raise InputError("vocabulary ids are not 0..N-1 without gaps", path)
        self.backend = backend
        self.special_tokens = special_tokens
        self.vocab_size = len(vocab)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[token] for token in special_tokens
        )
        self.special_ids = frozenset(vocab[token] for token in special_tokens)
        self._tokens = tokens  # id order
        # Special tokens in the text ("[MASK]") match as one token, as in transformers; those the
        # file declares keep their flags (RoBERTa's <mask> eats the space before it: lstrip).
        declared = {t.content for t in backend.get_added_tokens_decoder().values()}
        backend.add_special_tokens([t for t in special_tokens if t not in declared])
        self.template = template
        cls, sep = (special_tokens[2], self.cls_id), (special_tokens[3], self.sep_id)
        prefix = isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel) and bool(
            backend.pre_tokenizer.add_prefix_space
        )
        backend.post_processor = POST_PROCESSORS[template](cls, sep, prefix)
        # Measured, not declared, so that any normalizer of a foreign tokenizer.json is described.
        self.lowercase = backend.normalizer is not None and (
            backend.normalizer.normalize_str("A") == "a"
        )

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without [CLS]/[SEP]."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of many texts, without [CLS]/[SEP]; runs in parallel in Rust (no offsets kept)."""
        encodings = self.backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def encode_pair(self, a: str, b: str | None = None) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`."""
        encoding = self.backend.encode(a, b, add_special_tokens=True)
        return encoding.ids, encoding.type_ids

    def build_inputs(self, a: list[int], b: list[int] | None = None) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of the ids of one text or two with this template's
        special tokens around them (what encode_pair gives for their texts)."""
        return TEMPLATES[self.template](self.cls_id, self.sep_id, list(a), b and list(b))

    def num_special_tokens(self, pair: bool = False) -> int:
        """Special tokens the template adds to one text (pair=False) or to two."""
        ids, _ = self.build_inputs([], [] if pair else None)
        return len(ids)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ids; special tokens kept unless skipped."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)
