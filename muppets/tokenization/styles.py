"""What each model family's tokenizer looks like around its vocabulary, as one table.

A style names the tokenizer kind a family trains (WordPiece, byte-level BPE, Unigram), its special
tokens (in the id order a trained vocabulary gives them, and by role), where they go around one or
two texts, and the transformers class that reads the saved files. The templates are those of the
transformers tokenizers: BertTokenizer / AlbertTokenizer `[CLS] A [SEP] B [SEP]` with segment ids
0/1, RobertaTokenizer `<s> A </s></s> B </s>` (tokenizers' RobertaProcessing, segment ids 0),
XLNetTokenizer `A <sep> B <sep> <cls>` with the <cls> last and segment id 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from tokenizers import AddedToken, processors

from muppets.errors import InputError

ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
KINDS = ("wordpiece", "bpe", "unigram")


@dataclass(frozen=True)
class Style:
    kind: str  # one of KINDS
    tokens: tuple[str, ...]  # the special tokens at ids 0.. of a trained vocabulary
    roles: tuple[str, str, str, str, str]  # pad, unk, cls, sep, mask (ROLES' order)
    template: str  # key of POST_PROCESSORS
    tokenizer_class: str  # tokenizer_config.json's, so AutoTokenizer picks the same class
    # The mask token strips the space before it ("a <mask>" -> "a" "<mask>"), as RoBERTa's and
    # XLNet's tokenizers declare it.
    mask_lstrip: bool = False


_BERT = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ALBERT = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")  # albert-base-v2's spiece ids 0..4
_ROBERTA = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
_XLNET = ("<pad>", "<unk>", "<cls>", "<sep>", "<mask>")

STYLES: dict[str, Style] = {
    "bert": Style("wordpiece", _BERT, _BERT, "bert", "BertTokenizer"),
    # fairseq's dictionary order: <s> 0, <pad> 1, </s> 2, <unk> 3 (roberta-base), <mask> after.
    "roberta": Style(
        "bpe",
        ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
        _ROBERTA,
        "roberta",
        "RobertaTokenizer",
        mask_lstrip=True,
    ),
    "albert": Style("unigram", _ALBERT, _ALBERT, "bert", "AlbertTokenizer"),
    # xlnet-base-cased's spiece ids 0..8.
    "xlnet": Style(
        "unigram",
        ("<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"),
        _XLNET,
        "xlnet",
        "XLNetTokenizer",
        mask_lstrip=True,
    ),
}
# The style a model type's tokenizer is trained in; a kind alone trains its first family's style.
MODEL_TYPE_STYLES = {
    "bert": "bert",
    "electra": "bert",
    "roberta": "roberta",
    "albert": "albert",
    "xlnet": "xlnet",
}
KIND_STYLES = {"wordpiece": "bert", "bpe": "roberta", "unigram": "albert"}


def _bert(cls: tuple[str, int], sep: tuple[str, int], _: bool) -> processors.PostProcessor:
    return processors.TemplateProcessing(
        single=f"{cls[0]} $A {sep[0]}",
        pair=f"{cls[0]} $A {sep[0]} $B:1 {sep[0]}:1",
        special_tokens=[cls, sep],
    )


def _roberta(cls: tuple[str, int], sep: tuple[str, int], prefix: bool) -> processors.PostProcessor:
    # RobertaTokenizer's own post-processor: also trims the spaces that byte-level pieces carry
    # off their offsets (trim_offsets=True, its default).
    return processors.RobertaProcessing(sep, cls, trim_offsets=True, add_prefix_space=prefix)


def _xlnet(cls: tuple[str, int], sep: tuple[str, int], _: bool) -> processors.PostProcessor:
    return processors.TemplateProcessing(
        single=f"$A {sep[0]} {cls[0]}:2",
        pair=f"$A {sep[0]} $B:1 {sep[0]}:1 {cls[0]}:2",
        special_tokens=[cls, sep],
    )


POST_PROCESSORS = {"bert": _bert, "roberta": _roberta, "xlnet": _xlnet}

# The same templates on ids already tokenized: (cls, sep, a, b or None) -> (ids, segment ids).
Ids = list[int]


def _bert_ids(cls: int, sep: int, a: Ids, b: Ids | None) -> tuple[Ids, Ids]:
    second = [*b, sep] if b is not None else []
    return [cls, *a, sep, *second], [0] * (len(a) + 2) + [1] * len(second)


def _roberta_ids(cls: int, sep: int, a: Ids, b: Ids | None) -> tuple[Ids, Ids]:
    ids = [cls, *a, sep] + ([sep, *b, sep] if b is not None else [])
    return ids, [0] * len(ids)


def _xlnet_ids(cls: int, sep: int, a: Ids, b: Ids | None) -> tuple[Ids, Ids]:
    second = [*b, sep] if b is not None else []
    return [*a, sep, *second, cls], [0] * (len(a) + 1) + [1] * len(second) + [2]


TEMPLATES = {"bert": _bert_ids, "roberta": _roberta_ids, "xlnet": _xlnet_ids}


def read_json(path: Path) -> dict:
    """A JSON object from a tokenizer file, {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(f"not valid JSON: {error}", path) from None
    if not isinstance(values, dict):
        raise InputError("not a JSON object", path)
    return values


def style_of(directory: Path, kind: str) -> Style:
    """The style of a saved tokenizer: its tokenizer_config.json's class when one of ours, else
    the kind's default, with the special tokens its files name for each role (a value may be a
    string or {"content": ...}), the style's where none is named."""
    config = read_json(directory / "tokenizer_config.json")
    named_class = str(config.get("tokenizer_class", "")).removesuffix("Fast")
    by_class = {s.tokenizer_class: s for s in STYLES.values() if s.kind == kind}
    style = by_class.get(named_class, STYLES[KIND_STYLES[kind]])
    named: dict[str, str] = {}
    for values in (read_json(directory / "special_tokens_map.json"), config):
        for role in ROLES:
            value = values.get(role)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                named[role] = value
    roles = tuple(named.get(r, d) for r, d in zip(ROLES, style.roles, strict=True))
    return replace(style, roles=roles)


def trainer_tokens(style: Style) -> list[AddedToken]:
    """The style's special tokens, as a trainer should add them (ids 0.. in this order)."""
    mask = style.roles[4]
    return [
        AddedToken(t, special=True, normalized=False, lstrip=style.mask_lstrip and t == mask)
        for t in style.tokens
    ]


def tokenizer_config(style: Style, lowercase: bool, max_length: int) -> dict:
    """tokenizer_config.json for transformers' AutoTokenizer (roles named, class given)."""
    roles = dict(zip(ROLES, style.roles, strict=True))
    config = {"tokenizer_class": style.tokenizer_class, "do_lower_case": lowercase, **roles}
    if style.template == "roberta":
        config |= {"bos_token": "<s>", "eos_token": "</s>", "add_prefix_space": False}
    if style.template == "xlnet":
        config |= {"bos_token": "<s>", "eos_token": "</s>", "padding_side": "left"}
    return {**config, "model_max_length": max_length}
