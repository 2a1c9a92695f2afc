"""CJK characters are split one per token as BERT's BasicTokenizer._tokenize_chinese_chars does.

In `tokenizers` this is BertNormalizer(handle_chinese_chars=True) (it puts spaces around every
CJK ideograph), not BertPreTokenizer, which only splits on whitespace and punctuation. Checked
against transformers' BertTokenizerFast and the slow Python BertTokenizer on Chinese (Simplified
and Traditional), Japanese (kana are not in BERT's CJK ranges, so they stay joined) and Korean.
"""

import gzip
from pathlib import Path

import pytest
import transformers

from muppets.tokenization import train_wordpiece

SlowBertTokenizer = getattr(transformers, "BertTokenizerLegacy", transformers.BertTokenizer)
MULTILINGUAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual"
# Our own sentences (no licence attached).
OWN = [
    "我们明天去北京看长城。",
    "這是一個繁體中文的句子，裡面有標點符號！",
    "東京は日本の首都です。ひらがなとカタカナも使います。",
    "서울은 한국의 수도입니다.",
    "BERT 在 2018 年发表, and mixes 中文 with English.",
]


def multilingual_lines() -> list[str]:
    """Chinese text of the shared multilingual data when it is here (FLORES zh, PUD zh)."""
    lines = []
    flores = MULTILINGUAL / "flores200-devtest" / "zho_Hans.devtest"
    if flores.is_file():
        lines += flores.read_text(encoding="utf-8").splitlines()[:300]
    pud = MULTILINGUAL / "ud" / "zh_pud-ud-test.conllu.gz"
    if pud.is_file():
        with gzip.open(pud, "rt", encoding="utf-8") as f:
            lines += [line[len("# text = ") :].strip() for line in f if line.startswith("# text =")]
    return lines[:600]


CJK_RANGES = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]


def is_cjk(character: str) -> bool:
    """BERT's _is_chinese_char ranges (google-research/bert tokenization.py)."""
    cp = ord(character)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    texts = OWN * 3 + multilingual_lines()
    tokenizer = train_wordpiece(texts, vocab_size=3000, lowercase=True, min_frequency=1)
    directory = tmp_path_factory.mktemp("cjk")
    tokenizer.save(directory)
    return tokenizer, directory, texts


def test_every_cjk_ideograph_is_its_own_token(trained):
    tokenizer, _, _ = trained
    ids = tokenizer.encode("我们明天去北京看长城。")
    assert [tokenizer.id_to_token(i) for i in ids] == list("我们明天去北京看长城。")
    # kana are not CJK ideographs in BERT's ranges: "ひらがなとカタカナも使います" is not split
    # per character, while the kanji 使 is
    pieces = [tokenizer.id_to_token(i) for i in tokenizer.encode("ひらがなとカタカナも使います")]
    assert "使" in pieces and len(pieces) < len("ひらがなとカタカナも使います")
    for i in tokenizer.encode(OWN[1]):
        piece = tokenizer.id_to_token(i).removeprefix("##")
        assert not any(map(is_cjk, piece)) or len(piece) == 1


def test_ids_match_transformers_fast_and_slow_bert_tokenizers(trained):
    tokenizer, directory, texts = trained
    fast = transformers.BertTokenizerFast.from_pretrained(directory)
    slow = SlowBertTokenizer.from_pretrained(directory)
    expected = fast(texts)["input_ids"]
    assert [tokenizer.encode_pair(t)[0] for t in texts] == expected
    assert slow(texts)["input_ids"] == expected
    assert sum(map(len, expected)) > 200
