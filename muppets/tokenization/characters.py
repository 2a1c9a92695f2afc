"""ELMo character ids: every token becomes 50 ids, the UTF-8 bytes of the word plus markers.

The convention of bilm-tf (bilm/data.py, UnicodeCharsVocabulary and Batcher) and AllenNLP
(allennlp/data/token_indexers/elmo_indexer.py, ELMoCharacterMapper), so that weights trained by
either read our ids unchanged:

- raw ids 0..255 are the bytes of `word.encode("utf-8", "ignore")`; 256 begin-of-sentence,
  257 end-of-sentence, 258 begin-of-word, 259 end-of-word, 260 padding character;
- every raw id is shifted by + 1 so that 0 marks a padding *token* (bilm-tf's Batcher: "add one so
  that 0 is the mask value"), hence 262 rows in the character embedding;
- a token is [BOW, bytes..., EOW, PAD, ...] with the bytes cut to 48 so BOW and EOW always fit;
- the tokens "<S>" and "</S>" become [BOW, BOS or EOS, EOW, PAD, ...].

Shapes:
    B  sentences      T  tokens of the longest sentence (+ 2 with boundaries)      C  50
"""

from __future__ import annotations

import torch

MAX_CHARACTERS_PER_TOKEN = 50
# Raw ids of the special characters, before the + 1 shift (bilm-tf bilm/data.py).
BOS_CHAR = 256
EOS_CHAR = 257
BOW_CHAR = 258
EOW_CHAR = 259
PAD_CHAR = 260
CHAR_VOCAB_SIZE = 262  # 0 (padding token) + 256 bytes + 5 specials, after the shift
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


def _shifted(raw: list[int]) -> list[int]:
    """[BOW, raw..., EOW] padded with PAD to 50, every id + 1."""
    ids = [BOW_CHAR, *raw, EOW_CHAR]
    ids += [PAD_CHAR] * (MAX_CHARACTERS_PER_TOKEN - len(ids))
    return [i + 1 for i in ids]


_BOS_IDS = _shifted([BOS_CHAR])
_EOS_IDS = _shifted([EOS_CHAR])


def word_to_char_ids(word: str) -> list[int]:
    """The 50 shifted ids of one token; longer words keep their first 48 bytes (no error).

    Truncation counts bytes, not characters, and may split a multi-byte character, exactly as
    bilm-tf does (`word.encode("utf-8", "ignore")[: max_word_length - 2]`).
    """
    if word == BOS_TOKEN:
        return list(_BOS_IDS)
    if word == EOS_TOKEN:
        return list(_EOS_IDS)
    return _shifted(list(word.encode("utf-8", "ignore")[: MAX_CHARACTERS_PER_TOKEN - 2]))


def batch_to_char_ids(
    sentences: list[list[str]], add_sentence_boundaries: bool = True
) -> torch.Tensor:
    """(B, T, 50) int64 ids; rows of padding tokens are all 0, so the token mask of the biLM is
    `char_ids.ne(0).any(-1)`. With boundaries every sentence reads <S> tokens... </S>, as the
    biLM saw during training (bilm-tf Batcher, AllenNLP ELMoTokenCharactersIndexer)."""
    if add_sentence_boundaries:
        sentences = [[BOS_TOKEN, *tokens, EOS_TOKEN] for tokens in sentences]
    T = max((len(tokens) for tokens in sentences), default=0)
    ids = torch.zeros(len(sentences), T, MAX_CHARACTERS_PER_TOKEN, dtype=torch.long)  # (B, T, C)
    for b, tokens in enumerate(sentences):
        if tokens:
            ids[b, : len(tokens)] = torch.tensor([word_to_char_ids(w) for w in tokens])
    return ids
