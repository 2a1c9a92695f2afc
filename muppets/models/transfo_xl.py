"""Transformer-XL: a causal language model with segment-level recurrence and relative positions.

Dai et al. 2019, "Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context"
(https://arxiv.org/abs/1901.02860). The reference is kimiyoung/transformer-xl pytorch/
mem_transformer.py (MemTransformerLM with attn_type 0, RelPartialLearnableDecoderLayer,
PositionwiseFF, _update_mems); field names follow transformers 4.x's TransfoXLConfig.
  - the word embedding is scaled by sqrt(d_model) (AdaptiveEmbedding's emb_scale), then dropout;
  - each layer: relative attention over [memory; h] (relative_attention.py, shared with XLNet:
    u, v biases, sinusoid over reversed distances, clamp_len), then a ReLU feed-forward; post-LN
    (the default) or pre-LN (pre_lnorm: the memory is normalized with the segment, and as in the
    reference there is no final LayerNorm);
  - the memory of layer l is the last mem_len of [memory; layer l's input], detached (section
    3.2: no gradient flows into the previous segment);
  - the head is a full softmax tied to the embedding, with a bias (ProjectedAdaptiveLogSoftmax
    without cutoffs and div_val 1). u, v are per layer (untie_r, as the released wt103 model).

Shapes:
    B  batch    T  segment length (tgt_len)    M  memory length    K  keys = M + T
    H  d_model  N  heads    D  d_head    I  d_inner    V  vocabulary
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.dropout import Dropout
from muppets.models.lm_softmax import softmax_nll_sum
from muppets.models.relative_attention import (
    MASKED,
    RelativeAttention,
    relative_distances,
    sinusoid_encoding,
    update_memory,
)
from muppets.models.xlnet import FeedForward

IGNORE_INDEX = -100


@dataclass
class TransfoXLConfig:
    """transformers 4.x TransfoXLConfig's fields (adaptive softmax ones left out); defaults are
    the paper's WikiText-103 base (run_wt103_base.sh). mem_len 0: no recurrence; clamp_len 0:
    no clamp; same_length: every query sees the same number of keys (used in evaluation)."""

    vocab_size: int = 267735
    d_model: int = 410
    n_layer: int = 16
    n_head: int = 10
    d_head: int = 41
    d_inner: int = 2100
    dropout: float = 0.1
    dropatt: float = 0.0
    pre_lnorm: bool = False
    tgt_len: int = 150
    mem_len: int = 150
    clamp_len: int = 0
    same_length: bool = False
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02
    model_type: str = "transfo-xl"

    def __post_init__(self) -> None:
        if self.model_type != "transfo-xl":
            raise ConfigError(f"config field model_type={self.model_type!r}: must be 'transfo-xl'")
        for name in ("vocab_size", "d_model", "n_layer", "n_head", "d_head", "d_inner", "tgt_len"):
            _require_int(self, name, minimum=1)
        for name in ("mem_len", "clamp_len"):
            _require_int(self, name, minimum=0)
        if self.d_model % 2:
            raise ConfigError(
                f"config field d_model={self.d_model}: must be even (sine and cosine halves)"
            )
        for name in ("dropout", "dropatt"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"config field {name}={getattr(self, name)!r}: must be in [0, 1)")

    @property
    def hidden_size(self) -> int:
        return self.d_model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransfoXLConfig:
        """A config.json dict (ours or transformers 4.x's); unknown keys are ignored, and
        transformers' clamp_len -1 (no clamp) is our 0."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if isinstance(values.get("clamp_len"), int) and values["clamp_len"] < 0:
            values["clamp_len"] = 0
        return cls(**values)


def _require_int(config: TransfoXLConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"config field {name}={value!r}: must be an integer >= {minimum}")


class TransfoXLOutput(NamedTuple):
    logits: Tensor | None  # (B, T, V); None when only the loss was asked for
    nll: Tensor | None  # (B, T) -log p(label), 0 where the label is IGNORE_INDEX; None without
    mems: list[Tensor] | None  # per layer (B, M', H), detached; None when mem_len is 0
    loss: Tensor | None = None  # () summed NLL of the labels, with sum_only


class TransfoXLLayer(nn.Module):
    """RelPartialLearnableDecoderLayer: relative attention, then the feed-forward, each with a
    residual and a LayerNorm after (post-LN) or before (pre-LN) it."""

    def __init__(self, c: TransfoXLConfig):
        super().__init__()
        self.attention = RelativeAttention(c.d_model, c.n_head, c.d_head, c.dropatt, False)
        self.attention_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_epsilon)
        self.feed_forward = FeedForward(c.d_model, c.d_inner, "relu", c.dropout)
        self.feed_forward_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_epsilon)
        self.dropout = Dropout(c.dropout)  # on the attention output (after o_net)
        self.pre_lnorm = c.pre_lnorm

    def forward(self, h: Tensor, memory: Tensor | None, encoding: Tensor, mask_bias: Tensor):
        if self.pre_lnorm:
            # the reference normalizes cat([mems, w]) before qkv_net: the memory too
            x = self.attention_norm(h)
            m = self.attention_norm(memory) if memory is not None else None
            h = h + self.dropout(self.attention(x, m, encoding, mask_bias))
            return h + self.feed_forward(self.feed_forward_norm(h))
        h = self.attention_norm(h + self.dropout(self.attention(h, memory, encoding, mask_bias)))
        return self.feed_forward_norm(h + self.feed_forward(h))


def causal_mask_bias(T: int, M: int, mem_len: int, same_length: bool, device=None) -> Tensor:
    """(1, 1, T, K) MASKED where query i (at position M + i) may not see key j: the future,
    j > M + i (dec_attn_mask). same_length (MemTransformerLM._forward): the keys further back
    than the last mem_len are masked too, so every query sees the same number of keys once the
    memory is full; it needs a memory (mem_len > 0) and is ignored without one."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(M + T, device=device)[None, :]
    blocked = j > M + i
    if same_length and mem_len > 0:
        mask_len = M + T - mem_len
        shift = T - mask_len if mask_len > 0 else T
        blocked = blocked | (j <= i - shift)  # torch.tril(all_ones, -mask_shift_len)
    return torch.where(blocked, MASKED, 0.0)[None, None]


@functools.lru_cache(maxsize=16)
def position_tables(
    T: int, M: int, mem_len: int, same_length: bool, clamp_len: int, d_model: int, device, dtype
) -> tuple[Tensor, Tensor]:
    """The distance encodings (1, R, H) and the causal mask bias (1, 1, T, K) of a segment of T
    after M remembered positions: they depend on the shapes only, so they are built once per
    shape, not at every step (never written to: dropout makes a new tensor)."""
    distances = relative_distances(T, M + T, clamp_len, causal=True, device=device)
    encoding = sinusoid_encoding(distances[None], d_model).to(dtype)
    return encoding, causal_mask_bias(T, M, mem_len, same_length, device).to(dtype)


class TransfoXLLMHeadModel(nn.Module):
    """Embedding, layers and the tied softmax head. forward(input_ids, mems, labels)."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.config = config
        c = config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(TransfoXLLayer(c) for _ in range(c.n_layer))
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))  # the softmax's, the weight is tied
        self.dropout = Dropout(c.dropout)
        initialize_transfo_xl(self, c.init_std)

    def forward(
        self,
        input_ids: Tensor,
        mems: list[Tensor] | None = None,
        labels: Tensor | None = None,
        return_logits: bool = True,
        sum_only: bool = False,
    ) -> TransfoXLOutput:
        """input_ids (B, T); mems: per layer (B, M, H) from the previous segment (None or
        length 0: none); labels (B, T) next tokens, IGNORE_INDEX where not predicted.
        sum_only: only the summed NLL of the labels (training), by lm_softmax's blocked path,
        which never holds the (B, T, V) logits."""
        c = self.config
        B, T = input_ids.shape
        if mems is not None and len(mems) != c.n_layer:
            raise ValueError(f"mems has {len(mems)} layers, the model {c.n_layer}")
        if mems is not None and mems[0].shape[1] == 0:
            mems = None
        M = mems[0].shape[1] if mems is not None else 0
        device = input_ids.device
        # With sum_only the tied head below gives the weight a dense gradient: the lookup's is
        # left sparse (its rows, added into that one), not a second dense (V, H) tensor.
        embedded = F.embedding(input_ids, self.word_embeddings.weight, sparse=sum_only)
        h = self.dropout(embedded * c.d_model**0.5)  # (B, T, H)
        table, mask_bias = position_tables(
            T, M, c.mem_len, c.same_length, c.clamp_len, c.d_model, device, h.dtype
        )
        encoding = self.dropout(table)  # (1, R, H)
        new_mems = [] if c.mem_len > 0 else None
        for index, layer in enumerate(self.layers):
            memory = mems[index] if mems is not None else None
            if new_mems is not None:  # the layer's input, as _update_mems keeps hids[i]
                new_mems.append(update_memory(memory, h, c.mem_len))
            h = layer(h, memory, encoding, mask_bias)
        h = self.dropout(h)
        if sum_only:
            flat, targets = h.reshape(B * T, -1), labels.reshape(-1)  # (B * T, H), (B * T,)
            keep = targets != IGNORE_INDEX
            if not bool(keep.all()):  # only the predicted rows (no copy when all are)
                flat, targets = flat[keep], targets[keep]
            loss = softmax_nll_sum(flat, self.word_embeddings.weight, self.bias, targets)
            return TransfoXLOutput(None, None, new_mems, loss)
        logits = F.linear(h, self.word_embeddings.weight, self.bias)  # (B, T, V)
        nll = None
        if labels is not None:
            flat = F.cross_entropy(
                logits.reshape(B * T, -1).float(),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="none",
            )
            nll = flat.view(B, T)
        return TransfoXLOutput(logits if return_logits else None, nll, new_mems)


@torch.no_grad()
def initialize_transfo_xl(module: nn.Module, std: float) -> None:
    """N(0, std) for every weight, the attention tensors and the u, v biases; zero biases; unit
    LayerNorms (mem_transformer.py's weights_init draws LayerNorm weights from N(1, std))."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(0.0, std)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, RelativeAttention):
            for p in m.parameters(recurse=False):
                p.normal_(0.0, std)
