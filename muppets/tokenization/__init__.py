"""tokenization layer: text <-> ids. Imports only muppets.errors and third-party libraries."""

from muppets.tokenization.wordpiece import (
    SPECIAL_TOKENS,
    WordPieceTokenizer,
    load_tokenizer,
    train_wordpiece,
)

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "load_tokenizer", "train_wordpiece"]
