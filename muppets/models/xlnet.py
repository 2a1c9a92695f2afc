"""XLNet: relative attention with memory, two-stream attention and a tied LM head.

Yang et al. 2019, "XLNet: Generalized Autoregressive Pretraining for Language Understanding"
(https://arxiv.org/abs/1906.08237); the reference is zihangdai/xlnet (modeling.py,
transformer_xl) and transformers' modeling_xlnet.py (XLNetModel, XLNetLMHeadModel), whose
config.json field names the config keeps. What it is made of:
  - Transformer-XL's relative attention with memory (relative_attention.py), plus the relative
    segment term (section 2.5) and XLNet's post-LN residual blocks;
  - two streams (section 2.3): the content stream h sees its own token; the query stream g starts
    from a learned mask_emb and sees only its position, where it predicts (target_mapping: the
    K-th of the sequence that is predicted, section 2.3 "partial prediction"). Both share every
    weight. perm_mask[b, i, j] = 1: position i may not see j (the factorisation order);
  - memories (section 2.4): each layer's input, kept for the next segment (mem_len, reuse_len).

The query stream is computed only at the predicted positions: transformers and the reference
scatter its queries back to all T positions, run the attention there and gather again, which
costs T / K times more for the same numbers (with target_mapping rows one-hot or zero, as XLNet's
data pipeline makes them). Both streams travel through a layer as one tensor, the segment's T
rows then the P predicted rows, so they share every GEMM, softmax and LayerNorm call.

Shapes:
    B  batch    T  segment length    M  memory length    K  keys = M + T    P  predicted positions
    H  d_model  N  heads  D  d_head   I  d_inner   V  vocabulary
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.dropout import Dropout
from muppets.models.layers import ACTIVATIONS
from muppets.models.relative_attention import (
    MASKED,
    RelativeAttention,
    relative_distances,
    sinusoid_encoding,
    update_memory,
)


@dataclass
class XLNetConfig:
    """transformers' XLNetConfig fields; defaults are xlnet-base-cased's. clamp_len 0 = no clamp
    (transformers writes -1); mem_len None = keep the whole segment (transformers' default use),
    0 = no memory."""

    vocab_size: int = 32000
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    d_inner: int = 3072
    ff_activation: str = "gelu"
    untie_r: bool = True
    attn_type: str = "bi"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    mem_len: int | None = None
    reuse_len: int | None = None
    bi_data: bool = False
    clamp_len: int = 0
    same_length: bool = False
    pad_token_id: int = 5
    bos_token_id: int = 1
    eos_token_id: int = 2
    model_type: str = "xlnet"

    def __post_init__(self) -> None:
        if self.model_type != "xlnet":
            raise ConfigError(f"config field model_type={self.model_type!r}: must be 'xlnet'")
        for name in ("vocab_size", "d_model", "n_layer", "n_head", "d_inner"):
            _require_int(self, name, minimum=1)
        for name in ("mem_len", "reuse_len"):
            if getattr(self, name) is not None:
                _require_int(self, name, minimum=0)
        _require_int(self, "clamp_len", minimum=0)
        if self.d_model % self.n_head:
            raise ConfigError(
                f"config field n_head={self.n_head}: must divide d_model={self.d_model}"
            )
        if self.d_model % 2:
            raise ConfigError(
                f"config field d_model={self.d_model}: must be even (sine and cosine halves)"
            )
        if self.attn_type not in ("bi", "uni"):
            raise ConfigError(f"config field attn_type={self.attn_type!r}: must be 'bi' or 'uni'")
        if self.ff_activation not in ACTIVATIONS:
            raise ConfigError(
                f"config field ff_activation={self.ff_activation!r}: valid: "
                + ", ".join(ACTIVATIONS)
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config field dropout={self.dropout!r}: must be in [0, 1)")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @property
    def hidden_size(self) -> int:  # the encoder protocol's name
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def max_sequence_length(self) -> int:
        # Relative positions have no table to run out of; 512 is XLNet's pretraining seq_len.
        return 512

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XLNetConfig:
        """A config.json dict (ours or transformers'); unknown keys are ignored. In a
        transformers dict (it names "architectures"), clamp_len <= 0 is no clamp (our 0) and
        mem_len None or 0 keeps the whole segment (our None; with use_mems_eval off, our 0)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "architectures" in d:
            clamp = values.get("clamp_len")
            if isinstance(clamp, int) and not isinstance(clamp, bool) and clamp < 0:
                values["clamp_len"] = 0
            if values.get("mem_len") in (None, 0):
                values["mem_len"] = 0 if d.get("use_mems_eval") is False else None
        return cls(**values)


def _require_int(config: XLNetConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"config field {name}={value!r}: must be an integer >= {minimum}")


class XLNetOutput(NamedTuple):
    hidden: Tensor  # (B, T, H) content stream, or (B, P, H) query stream with target_mapping
    mems: list[Tensor] | None  # per layer (B, M', H), detached; None unless use_mems


class FeedForward(nn.Module):
    """H -> I -> H with dropout after the activation and after the output (XLNetFeedForward)."""

    def __init__(self, d_model: int, d_inner: int, activation: str, dropout: float):
        super().__init__()
        self.up = nn.Linear(d_model, d_inner)
        self.activation = ACTIVATIONS[activation]
        self.down = nn.Linear(d_inner, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(self.dropout(self.activation(self.up(x)))))


class XLNetLayer(nn.Module):
    """Relative attention -> residual + LayerNorm -> FFN -> residual + LayerNorm, for both
    streams with the same weights."""

    def __init__(self, c: XLNetConfig):
        super().__init__()
        self.attention = RelativeAttention(c.d_model, c.n_head, c.d_head, c.dropout, True)
        self.attention_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.feed_forward = FeedForward(c.d_model, c.d_inner, c.ff_activation, c.dropout)
        self.feed_forward_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)

    def _block(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.attention_norm(x + self.dropout(attended))
        return self.feed_forward_norm(x + self.feed_forward(x))

    def forward(
        self,
        x: Tensor,
        qlen: int,
        memory: Tensor | None,
        encoding: Tensor,
        mask_bias: Tensor | None,
        different: Tensor | None,
        positions: Tensor | None = None,
        weight: Tensor | None = None,
        content: bool = True,
    ) -> Tensor:
        """x (B, T + P, H): the content stream's T = qlen rows, then the query stream's P rows at
        positions (B, P), in one tensor so that both streams run through the same GEMMs;
        weight (B, T + P, 1) or None: 0 on the query row of a zero target_mapping row (it
        attends to nothing). content=False: only the query stream is computed, (B, P, H)."""
        attended = self.attention(
            x, memory, encoding, mask_bias, different, qlen, positions, content
        )
        if not content:
            x = x[:, qlen:]
            weight = weight[:, qlen:] if weight is not None else None
        if weight is not None:
            attended = attended * weight
        return self._block(x, attended)


def target_positions(target_mapping: Tensor) -> tuple[Tensor, Tensor]:
    """(B, P, T) one-hot-or-zero rows -> (positions (B, P), weight (B, P, 1)): where each
    prediction sits, and 0 for padding rows. Other mappings (soft, or several ones in a row)
    have no meaning here and are refused."""
    ones = target_mapping.sum(-1)
    if not (((target_mapping == 0) | (target_mapping == 1)).all() and (ones <= 1).all()):
        raise ValueError("target_mapping rows must be one-hot or all zero")
    return target_mapping.argmax(-1), ones[..., None].to(torch.float32)


class XLNetModel(nn.Module):
    """Word embeddings, mask_emb and the layers (transformers' XLNetModel). forward is the encoder
    protocol (B, T) -> (B, T, H); run takes memories, perm_mask and target_mapping."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.hidden_size = config.d_model
        self.word_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, config.d_model))
        self.layers = nn.ModuleList(XLNetLayer(config) for _ in range(config.n_layer))
        self.dropout = Dropout(config.dropout)
        initialize_xlnet(self, config.initializer_range)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        return self.run(input_ids, attention_mask, token_type_ids).hidden

    def forward_all_layers(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> list[Tensor]:
        """L + 1 tensors (B, T, H): the word embeddings, then every layer's content stream (the
        last one equals forward() in eval mode; transformers' hidden_states)."""
        layers: list[Tensor] = []
        self.run(input_ids, attention_mask, token_type_ids, collect=layers)
        return layers

    def _blocked(self, B, T, M, attention_mask, perm_mask, device) -> Tensor | None:
        """(B, T, K) True where query i may not see key j (memory keys: only by causality)."""
        c, K = self.config, M + T
        i = torch.arange(T, device=device)[:, None]
        j = torch.arange(K, device=device)[None, :]
        blocked = None
        if c.attn_type == "uni":  # causal with memory; same_length: every query sees M + 1 keys
            blocked = (j > M + i) | (j < i) if c.same_length else j > M + i
            blocked = blocked.expand(B, T, K)
        data = None
        if attention_mask is not None:
            data = (attention_mask == 0)[:, None, :].expand(B, T, T)
        if perm_mask is not None:
            data = perm_mask > 0 if data is None else data | (perm_mask > 0)
        if data is not None:
            data = F.pad(data, (M, 0))  # (B, T, K): memory columns never blocked by data
            blocked = data if blocked is None else blocked | data
        return blocked

    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mems: list[Tensor] | None = None,
        perm_mask: Tensor | None = None,
        target_mapping: Tensor | None = None,
        use_mems: bool = False,
        collect: list[Tensor] | None = None,
        tied_head: bool = False,
    ) -> XLNetOutput:
        """input_ids (B, T); attention_mask (B, T) 1 = real token; mems: per layer (B, M, H);
        perm_mask (B, T, T) 1 = i may not see j; target_mapping (B, P, T) one-hot rows;
        collect: a list that receives the content stream before each layer and after the last;
        tied_head: the caller projects the output with word_embeddings.weight (pretraining), so
        that weight gets a dense gradient there, and the lookup's own gradient is left sparse
        (its rows only, added into the dense one) instead of a second dense (V, H) tensor."""
        c = self.config
        B, T = input_ids.shape
        M = mems[0].shape[1] if mems is not None else 0
        device = input_ids.device
        blocked = self._blocked(B, T, M, attention_mask, perm_mask, device)
        mask_bias = None
        if blocked is not None:
            # The content stream always sees its own token (non_tgt_mask in the reference).
            i = torch.arange(T, device=device)[:, None]
            j = torch.arange(M + T, device=device)[None, :]
            mask_bias = torch.where(blocked & (j != i + M), MASKED, 0.0)[:, None]  # (B,1,T,K)
        embedded = F.embedding(input_ids, self.word_embeddings.weight, sparse=tied_head)
        h = self.dropout(embedded)  # (B, T, H)
        different = None
        if token_type_ids is not None:  # memory tokens count as segment 0, as the reference's
            keys = F.pad(token_type_ids, (M, 0))
            different = (token_type_ids[:, :, None] != keys[:, None, :])[:, None].to(h.dtype)
        x, positions, weight = h, None, None
        if target_mapping is not None:
            # The query stream g: P more rows after the segment's, at the predicted positions,
            # with those positions' mask and segment rows.
            positions, weight = target_positions(target_mapping)
            g = self.dropout(self.mask_emb.expand(B, positions.shape[1], -1))  # (B, P, H)
            x = torch.cat([h, g], dim=1)  # (B, T + P, H)
            rows = positions[:, None, :, None].expand(-1, 1, -1, M + T)  # (B, 1, P, K)
            if blocked is not None:
                g_bias = torch.where(blocked[:, None].gather(2, rows), MASKED, 0.0)
                mask_bias = torch.cat([mask_bias, g_bias], dim=2)  # (B, 1, T + P, K)
            if different is not None:
                different = torch.cat([different, different.gather(2, rows)], dim=2)
            if bool((weight == 1).all()):
                weight = None  # no zero row: nothing to silence
            else:
                weight = torch.cat([weight.new_ones(B, T, 1), weight], dim=1).to(h.dtype)
        encoding = self._encoding(B, T, M + T, device).to(h.dtype)
        new_mems = [] if use_mems else None
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            memory = mems[index] if mems is not None else None
            if use_mems:
                new_mems.append(update_memory(memory, x[:, :T], c.mem_len, c.reuse_len))
            # With two streams only g is returned: the last layer's content output is not
            # computed (transformers computes it and drops it).
            content = positions is None or index < last
            if collect is not None:
                collect.append(x[:, :T])
            x = layer(x, T, memory, encoding, mask_bias, different, positions, weight, content)
        if collect is not None and positions is None:
            collect.append(x)
        return XLNetOutput(self.dropout(x), new_mems)

    def _encoding(self, B: int, T: int, K: int, device) -> Tensor:
        """(P, R, H): one distance table, or forward and backward ones with bi_data."""
        c = self.config
        causal = c.attn_type == "uni"
        tables = [relative_distances(T, K, c.clamp_len, causal, device)]
        if c.bi_data:
            if B % 2:
                raise ValueError(f"bi_data needs an even batch size, got {B}")
            tables.append(relative_distances(T, K, c.clamp_len, causal, device, backward=True))
        return self.dropout(sinusoid_encoding(torch.stack(tables), c.d_model))


class XLNetLMHead(nn.Module):
    """Logits = hidden . word_embeddings^T + bias (transformers' lm_loss, tied)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, word_embeddings: Tensor) -> Tensor:
        return F.linear(hidden, word_embeddings, self.bias)


class XLNetLMOutput(NamedTuple):
    logits: Tensor | None  # (B, T, V), or (B, P, V) at the predicted positions; None headless
    hidden: Tensor  # the last layer's (B, T, H), or (B, P, H)
    mems: list[Tensor] | None


class XLNetLMHeadModel(nn.Module):
    """The encoder and the tied LM head (transformers' XLNetLMHeadModel); mlm_head None: the
    encoder alone (XLNetModel)."""

    def __init__(self, config: XLNetConfig, with_mlm_head: bool = True):
        super().__init__()
        self.encoder = XLNetModel(config)
        self.mlm_head = XLNetLMHead(config.vocab_size) if with_mlm_head else None

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mems: list[Tensor] | None = None,
        perm_mask: Tensor | None = None,
        target_mapping: Tensor | None = None,
        use_mems: bool = False,
    ) -> XLNetLMOutput:
        out = self.encoder.run(
            input_ids, attention_mask, token_type_ids, mems, perm_mask, target_mapping, use_mems
        )
        logits = None
        if self.mlm_head is not None:
            logits = self.mlm_head(out.hidden, self.encoder.word_embeddings.weight)
        return XLNetLMOutput(logits, out.hidden, out.mems)


@torch.no_grad()
def initialize_xlnet(module: nn.Module, std: float) -> None:
    """As transformers' XLNetPreTrainedModel._init_weights: N(0, std) for every weight, the
    attention tensors and mask_emb; zero biases; unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, std)
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, RelativeAttention):
            for p in m.parameters(recurse=False):
                p.normal_(0.0, std)
        elif isinstance(m, XLNetModel):
            m.mask_emb.normal_(0.0, std)
