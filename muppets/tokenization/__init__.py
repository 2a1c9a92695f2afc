"""tokenization layer: text <-> ids. Imports only muppets.errors and third-party libraries."""

from muppets.tokenization.bpe import BPETokenizer, train_bpe
from muppets.tokenization.families import load_any_tokenizer, train_any
from muppets.tokenization.unigram import UnigramTokenizer, train_unigram
from muppets.tokenization.wordpiece import (
    SPECIAL_TOKENS,
    WordPieceTokenizer,
    load_tokenizer,
    train_wordpiece,
)

__all__ = [
    "SPECIAL_TOKENS",
    "BPETokenizer",
    "UnigramTokenizer",
    "WordPieceTokenizer",
    "load_any_tokenizer",
    "load_tokenizer",
    "train_any",
    "train_bpe",
    "train_unigram",
    "train_wordpiece",
]
