"""What every tokenizer family here shares: a `tokenizers.Tokenizer` with five special-token
roles (pad, unk, cls, sep, mask) at known ids and BERT's [CLS] A [SEP] (B [SEP]) template.

The family classes (wordpiece.WordPieceTokenizer, unigram.UnigramTokenizer) add what differs:
their special tokens' spellings, which pieces continue a word, their fingerprint and files.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, processors

from muppets.errors import InputError


class BackendTokenizer:
    """Text <-> ids over `backend`. `special_tokens`: the pad, unk, cls, sep and mask tokens, in
    that order. `path` only labels errors (the file the backend came from). The backend gets the
    special tokens and the [CLS]/[SEP] post-processor of this vocabulary's ids set on it."""

    backend: Tokenizer
    lowercase: bool
    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    special_ids: frozenset[int]

    def __init__(self, backend: Tokenizer, special_tokens: tuple[str, ...], path: object = None):
        vocab = backend.get_vocab(with_added_tokens=True)
        missing = [token for token in special_tokens if token not in vocab]
        if missing:
            raise InputError(f"vocabulary lacks the special token(s) {', '.join(missing)}", path)
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise InputError("vocabulary ids are not 0..N-1 without gaps", path)
        self.backend = backend
        self.special_tokens = special_tokens
        self.vocab_size = len(vocab)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[token] for token in special_tokens
        )
        self.special_ids = frozenset(vocab[token] for token in special_tokens)
        self._tokens = sorted(vocab, key=vocab.get)  # id order
        # Special tokens in the text ("[MASK]") match as one token, as in transformers.
        backend.add_special_tokens(list(special_tokens))
        # [CLS] A [SEP] (B [SEP]) with segment ids 0 (1), using this vocabulary's ids.
        cls, sep = special_tokens[2], special_tokens[3]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, self.cls_id), (sep, self.sep_id)],
        )
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

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ids; special tokens kept unless skipped."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)
