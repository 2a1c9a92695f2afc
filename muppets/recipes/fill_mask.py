"""`muppets predict fill-mask`: the top-k tokens a pretrained encoder puts at each [MASK]."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from muppets.errors import ConfigError, InputError
from muppets.models.heads import PretrainingModel
from muppets.tasks.prediction import NONFINITE
from muppets.tokenization.wordpiece import WordPieceTokenizer
from muppets.training.options import Precision, group, option
from muppets.training.precision import autocast
from muppets.training.pretrained import load_pretrained, resolve_checkpoint


@torch.inference_mode()
def fill_mask(
    model: PretrainingModel,
    tokenizer: WordPieceTokenizer,
    text: str,
    top_k: int = 5,
    positions: int | None = None,
    precision: str = "fp32",
) -> list[list[tuple[str, float]]]:
    """For every mask token in `text`, the top_k (token, probability) predictions, each token as
    the tokenizer decodes it alone (transformers' fill-mask token_str: byte-level BPE's "Ġto" is
    " to", WordPiece's "##ing" stays); a text longer than the model's `positions` is an
    InputError. `precision`: a resolved one, the forward's."""
    ids, types = tokenizer.encode_pair(text)
    if positions is not None and len(ids) > positions:
        raise InputError(f"text: {len(ids)} tokens, more than the model's {positions} positions")
    input_ids = torch.tensor([ids])  # (1, T)
    masked = input_ids.eq(tokenizer.mask_id)
    if not masked.any():  # named as this tokenizer writes it: [MASK], <mask>, ...
        mask = tokenizer.id_to_token(tokenizer.mask_id)
        raise InputError(f"the text has no {mask} token: {text!r}")
    device = next(model.parameters()).device
    with autocast(precision, device):
        logits = model(input_ids, torch.ones_like(input_ids), torch.tensor([types]), masked)
    probs = logits.mlm_logits.float().softmax(-1)  # (M, V)
    top = probs.topk(top_k, dim=-1)
    return [
        [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(ps, idx, strict=True)]
        for ps, idx in zip(top.values, top.indices, strict=True)
    ]


@dataclass
class FillMaskConfig:
    text: str = option("text with one or more [MASK] tokens", "", positional=True)
    model: str = option("checkpoint or run directory (ours or Hugging Face's)", "")
    top_k: int = option("predictions to show per mask", 5)
    arithmetic: Precision = group(Precision)

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a checkpoint directory)")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")


def run_fill_mask(config: FillMaskConfig) -> list[list[tuple[str, float]]]:
    precision = config.arithmetic.start("cpu").precision  # the model is loaded on the CPU
    model, model_config, tokenizer = load_pretrained(config.model)
    if isinstance(model, PretrainingModel) and model.mlm_head is None:
        raise InputError(
            "no MLM head: fill-mask is not available", resolve_checkpoint(config.model)
        )
    positions = model_config.max_sequence_length
    predictions = fill_mask(model, tokenizer, config.text, config.top_k, positions, precision)
    if not all(math.isfinite(p) for options in predictions for _, p in options):
        raise InputError(f"the model gives {NONFINITE}", resolve_checkpoint(config.model))
    print(config.text)
    for n, options in enumerate(predictions, start=1):
        shown = "  ".join(f"{token} {p:.3f}" for token, p in options)
        print(f"  [MASK] #{n}: {shown}")
    return predictions
