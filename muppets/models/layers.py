"""Transformer encoder primitives shared by the BERT family (BERT, RoBERTa, ALBERT, ELECTRA).

Vaswani et al. 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762), in the
post-LN arrangement of Devlin et al. 2019, "BERT" (https://arxiv.org/abs/1810.04805) section 3, or
pre-LN (Xiong et al. 2020, https://arxiv.org/abs/2002.04745).

Padding is never computed: a batch is packed once into its real tokens, every Linear, LayerNorm
and activation runs on the packed (N, H) rows, and only the attention core sees the (B, T) layout
(the scheme of flash-attn's bert_padding.py, done with index_select / index_copy). A layer can
also be asked for its output at a few rows only (R of N): pretraining reads the last layer at
masked tokens alone, so the rest of that layer's output projection and feed-forward is skipped.

Shapes:
    B  batch size            T  padded sequence length      N  real (non-padding) tokens in batch
    H  hidden size           I  intermediate size           nh attention heads, D = H // nh
    R  rows asked for (R <= N)
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Hugging Face `hidden_act` names. "gelu" is the exact erf GELU (transformers activations.py);
# "gelu_new" is the tanh approximation of the original TF BERT code.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class Packing(NamedTuple):
    """Where the real tokens of a (B, T) batch sit; indices is None when there is no padding."""

    indices: Tensor | None  # (N,) positions of real tokens in the flattened (B * T) batch
    batch_size: int
    seq_len: int
    # (B, 1, 1, T) bool, True = a real token that may be attended to (additive in an ONNX export)
    key_mask: Tensor | None


def make_packing(attention_mask: Tensor | None, batch_size: int, seq_len: int) -> Packing:
    """Pack only when some position is padding: a full batch keeps the cheaper reshape path.
    An ONNX export records one path for every batch: padded rows, masked keys (the packing's
    branch and its data-dependent row count would be frozen at the example batch's)."""
    if attention_mask is not None and torch.onnx.is_in_onnx_export():
        # An additive mask (0 or the lowest float; every row keeps its [CLS]): the exported
        # softmax is then one Add, where a bool mask adds a Where and a NaN check per layer.
        lowest = torch.finfo(torch.float32).min
        additive = (1.0 - attention_mask[:, None, None, :].float()) * lowest  # (B, 1, 1, T)
        return Packing(None, batch_size, seq_len, additive)
    if attention_mask is None or bool(attention_mask.all()):
        return Packing(None, batch_size, seq_len, None)
    mask = attention_mask.bool()
    indices = mask.flatten().nonzero().squeeze(1)  # (N,)
    return Packing(indices, batch_size, seq_len, mask[:, None, None, :])


class _SelectRows(torch.autograd.Function):
    """x.index_select(0, rows) for unique rows. Its backward writes the gradient with index_copy
    instead of accumulating with index_add, which is about 3x slower on CPU (measured)."""

    @staticmethod
    def forward(ctx, x: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.num_rows = x.shape[0]
        return x.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (rows,) = ctx.saved_tensors
        return grad.new_zeros((ctx.num_rows, *grad.shape[1:])).index_copy_(0, rows, grad), None


def select_rows(x: Tensor, rows: Tensor) -> Tensor:
    """(M, ...) -> (R, ...): the rows at unique indices `rows`."""
    return _SelectRows.apply(x, rows)


def unpad(x: Tensor, packing: Packing) -> Tensor:
    """(B, T, ...) -> (N, ...) real tokens only."""
    x = x.reshape(packing.batch_size * packing.seq_len, *x.shape[2:])  # (B * T, ...)
    return x if packing.indices is None else select_rows(x, packing.indices)


def pad(x: Tensor, packing: Packing) -> Tensor:
    """(N, ...) -> (B, T, ...) with zeros at padding positions."""
    B, T = packing.batch_size, packing.seq_len
    if packing.indices is not None:
        x = x.new_zeros((B * T, *x.shape[1:])).index_copy(0, packing.indices, x)  # (B * T, ...)
    return x.view(B, T, *x.shape[1:])


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and PyTorch's SDPA kernel."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        # Rows [0:H] project the query, [H:2H] the key, [2H:3H] the value (hf.py splits them).
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, packing: Packing, rows: Tensor | None = None) -> Tensor:
        """(N, H) -> (N, H), or (R, H) at the packed rows `rows` only (keys see all N)."""
        B, T, nh = packing.batch_size, packing.seq_len, self.num_heads
        qkv = pad(self.qkv(x), packing)  # (B, T, 3H)
        q, k, v = qkv.view(B, T, 3, nh, -1).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, D)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=packing.key_mask, dropout_p=p)
        y = unpad(y.transpose(1, 2).reshape(B, T, -1), packing)  # (N, H)
        return self.out(y if rows is None else select_rows(y, rows))


class FeedForward(nn.Module):
    """Position-wise H -> I -> H network (Vaswani et al. section 3.3)."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str):
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.activation = ACTIVATIONS[activation]
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))


class TransformerLayer(nn.Module):
    """One encoder layer on packed tokens (N, H) -> (N, H) (or (R, H), see forward).

    Post-LN (BERT): x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x))).
    Pre-LN (Xiong et al.): x = x + drop(attn(LN(x))); x = x + drop(ffn(LN(x))); the model then
    needs one final LayerNorm after the last layer.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        activation: str,
        dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
        pre_layer_norm: bool,
    ):
        super().__init__()
        self.pre_layer_norm = pre_layer_norm
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, intermediate_size, activation)
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, packing: Packing, rows: Tensor | None = None) -> Tensor:
        """rows: (R,) packed rows whose output is wanted; every row is still a key and value,
        but only these go through the output projection, the residuals and the feed-forward."""
        attended = self.attention(
            self.attention_norm(x) if self.pre_layer_norm else x, packing, rows
        )
        if rows is not None:
            x = select_rows(x, rows)  # (R, H)
        if self.pre_layer_norm:
            x = x + self.dropout(attended)
            return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        x = self.attention_norm(x + self.dropout(attended))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))


class Pooler(nn.Module):
    """BERT's sentence vector: dense + tanh on the first token's hidden state (section 3)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


@torch.no_grad()
def initialize(module: nn.Module, std: float) -> None:
    """BERT initialisation (truncation aside): N(0, std) weights, zero biases, unit LayerNorms.

    As transformers' BertPreTrainedModel._init_weights; an Embedding's padding row starts at zero.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, std)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
