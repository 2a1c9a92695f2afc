"""Load a pretrained encoder (ours or Hugging Face's), fill masks, convert between the two.

A muppets checkpoint directory holds config.json (our BertConfig fields, which are Hugging Face's
names), model.safetensors with our state-dict names, and the tokenizer files. A Hugging Face
directory is told apart by the "architectures" key that transformers writes in config.json.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from muppets.errors import ConfigError, InputError
from muppets.models.bert import BertConfig
from muppets.models.heads import PretrainingModel
from muppets.models.hf import load_hf_checkpoint, save_hf_checkpoint
from muppets.models.registry import build_pretraining_model
from muppets.tokenization.wordpiece import WordPieceTokenizer, load_tokenizer
from muppets.training.checkpoint import checkpoints, load_weights, save_pretrained

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its newest checkpoint)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    saved = checkpoints(path / "checkpoints")
    if saved:
        return saved[-1]
    raise InputError("not a checkpoint (no config.json) nor a run with checkpoints", path)


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", path, e.lineno) from None


def load_pretrained(path: str | Path) -> tuple[PretrainingModel, BertConfig, WordPieceTokenizer]:
    """(model in eval mode, config, tokenizer); model and tokenizer vocabularies must agree."""
    directory = resolve_checkpoint(path)
    hf_format = "architectures" in _read_config(directory)
    try:
        config = BertConfig.from_dict(_read_config(directory))
    except ConfigError as e:
        raise ConfigError(e.message, directory / "config.json") from None
    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size != config.vocab_size:  # checked first: the clearest message
        raise InputError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}: they come from different vocabularies",
            directory,
        )
    if hf_format:
        config, model = load_hf_checkpoint(directory)
    else:
        weights = directory / "model.safetensors"
        try:
            with safe_open(weights, framework="pt") as f:
                has_pair_head = any(k.startswith("pair_head.") for k in f.keys())
        except Exception as e:  # safetensors raises several types for a bad header
            raise InputError(f"cannot read safetensors weights: {e}", weights) from None
        model = build_pretraining_model(config, with_pair_head=has_pair_head)
        load_weights(model, directory)
    return model.eval(), config, tokenizer


@torch.no_grad()
def fill_mask(
    model: PretrainingModel, tokenizer: WordPieceTokenizer, text: str, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For every [MASK] in `text`, the top_k (token, probability) predictions."""
    ids, types = tokenizer.encode_pair(text)
    input_ids = torch.tensor([ids])  # (1, T)
    masked = input_ids.eq(tokenizer.mask_id)
    if not masked.any():
        raise InputError(f"the text has no [MASK] token: {text!r}")
    logits = model(input_ids, torch.ones_like(input_ids), torch.tensor([types]), masked)
    probs = logits.mlm_logits.float().softmax(-1)  # (M, V)
    top = probs.topk(top_k, dim=-1)
    return [
        [(tokenizer.id_to_token(int(i)), float(p)) for p, i in zip(ps, idx, strict=True)]
        for ps, idx in zip(top.values, top.indices, strict=True)
    ]


def _help(text: str, default, **more):
    return field(default=default, metadata={"help": text, **more})


@dataclass
class FillMaskConfig:
    text: str = _help("text with one or more [MASK] tokens", "", positional=True)
    model: str = _help("checkpoint or run directory (ours or Hugging Face's)", "")
    top_k: int = _help("predictions to show per mask", 5)

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a checkpoint directory)")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")


def run_fill_mask(config: FillMaskConfig) -> list[list[tuple[str, float]]]:
    model, _, tokenizer = load_pretrained(config.model)
    predictions = fill_mask(model, tokenizer, config.text, config.top_k)
    print(config.text)
    for n, options in enumerate(predictions, start=1):
        shown = "  ".join(f"{token} {p:.3f}" for token, p in options)
        print(f"  [MASK] #{n}: {shown}")
    return predictions


@dataclass
class ConvertConfig:
    input: str = _help("checkpoint directory to convert", "")
    out: str = _help("output directory", "")
    to: str = _help("hf (transformers format) or muppets", "hf")

    def __post_init__(self):
        if not self.input or not self.out:
            raise ConfigError("input and out are required")
        if self.to not in ("hf", "muppets"):
            raise ConfigError(f"to must be 'hf' or 'muppets', got {self.to!r}")


def convert(config: ConvertConfig) -> Path:
    """Ours <-> transformers; tokenizer files travel along."""
    model, model_config, _ = load_pretrained(config.input)
    source, out = resolve_checkpoint(config.input), Path(config.out)
    tokenizer_files = [source / n for n in TOKENIZER_FILES if (source / n).exists()]
    if config.to == "hf":
        save_hf_checkpoint(model, model_config, out)
        for f in tokenizer_files:
            shutil.copy2(f, out / f.name)
    else:
        save_pretrained(out, model, model_config.to_dict(), extra_files=tokenizer_files)
    print(f"convert: {source} -> {out} ({config.to} format)")
    return out
