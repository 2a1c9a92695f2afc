"""Relative multi-head attention of Transformer-XL and XLNet, with segment-level memory.

Dai et al. 2019, "Transformer-XL" (https://arxiv.org/abs/1901.02860) section 3.3: the score of
query i and key j is content (a) + content bias u (c) + position (b) + position bias v (d),

    A_ij = (q_i + u) . k_j  +  (q_i + v) . W_r R_{i-j}

with R the sinusoid of the relative distance and no absolute position anywhere. Yang et al. 2019,
"XLNet" (https://arxiv.org/abs/1906.08237) section 2.5 adds a relative segment term
(q_i + b) . s_ij, s_ij one of two learned vectors by whether i and j are in the same segment.
Reference code: zihangdai/xlnet modeling.py (rel_attn_core, rel_shift, relative_positional_
encoding, _cache_mem) and transformers' modeling_xlnet.py (XLNetRelativeAttention); weights are
stored as XLNet stores them, [d_model, n_head, d_head] (q, k, v, o, r).

The encodings are computed once over the reversed distances klen, klen - 1, ..., klen - R + 1
(R = klen + qlen for bidirectional attention, klen + 1 for causal; clamped to +-clamp_len), and
each query row is realigned by its own offset (the "relative shift"): the score of query i (at
position mlen + i) and key j (a memory or segment position) reads table row qlen - i + j, which
holds distance mlen + i - j. Here the shift is a strided view (no copy) for consecutive queries,
and a gather for XLNet's query stream, which asks only at the predicted positions.

Memory (section 3.2): each layer's input of the previous segment, kept without gradient
(`update_memory`), is prepended to the keys and values.

Transformer-XL uses it as: distances = relative_distances(T, M + T, clamp_len, causal=True),
encoding = sinusoid_encoding(distances[None], d_model), mask_bias MASKED where j > M + i (no
segments: RelativeAttention(..., segments=False)); u and v shared across layers (its untie_r
False) is one Parameter assigned to every layer's r_w_bias / r_r_bias.

Shapes:
    B  batch      Q  queries (segment length, or predicted positions)      M  memory length
    K  keys = M + segment length      R  relative distances in the table      P  1, or 2 with
    XLNet's bi_data (forward distances for the first half of the batch, backward for the second)
    H  d_model    N  heads    D  d_head
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Masked scores get this added, as the reference does (attn_score - 1e30 * attn_mask): a fully
# masked row then attends uniformly instead of giving NaN, as XLNet's query stream can.
MASKED = -1e30


def relative_distances(
    qlen: int, klen: int, clamp_len: int, causal: bool, device=None, backward: bool = False
) -> Tensor:
    """(R,) float distances klen, klen - 1, ... (down to 1 - qlen, or 0 when causal), clamped to
    +-clamp_len when clamp_len > 0 (xlnet's relative_positional_encoding); backward: negated (the
    second half of a bi_data batch reads the sequence right to left)."""
    end = 0 if causal else 1 - qlen
    d = torch.arange(klen, end - 1, -1, device=device, dtype=torch.float32)
    if backward:
        d = -d
    if clamp_len > 0:
        d = d.clamp(-clamp_len, clamp_len)
    return d


def sinusoid_encoding(distances: Tensor, d_model: int) -> Tensor:
    """(..., R) -> (..., R, H): [sin | cos] of distance / 10000^(2k/H) (Vaswani et al. 3.5, with
    the sines first as in Transformer-XL's PositionalEmbedding)."""
    frequencies = torch.arange(0, d_model, 2, device=distances.device).float()
    inverse = 1.0 / torch.pow(10000.0, frequencies / d_model)  # (H/2,)
    angles = distances[..., None] * inverse  # (..., R, H/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def update_memory(
    memory: Tensor | None, layer_input: Tensor, mem_len: int | None, reuse_len: int | None = None
) -> Tensor:
    """The next segment's memory of one layer: the last mem_len of [memory; layer input] (all of
    it when mem_len is None), detached so that no gradient flows into the previous segment
    (section 3.2: SG(.)); reuse_len > 0 keeps only the first reuse_len positions of the input
    (XLNet's _cache_mem: the part of a pretraining segment that the next one reuses)."""
    if reuse_len:
        layer_input = layer_input[:, :reuse_len]
    joined = layer_input if memory is None else torch.cat([memory, layer_input], dim=1)
    if mem_len is not None:
        joined = joined[:, max(joined.shape[1] - mem_len, 0) :]
    return joined.detach()  # (B, M', H)


def shift_consecutive(raw: Tensor, klen: int) -> Tensor:
    """(B, N, Q, R) scores against the distance table -> (B, N, Q, K) against the keys, for query
    rows i = 0 .. Q - 1 of the segment: out[..., i, j] = raw[..., i, Q - i + j].

    A strided view of raw (row i starts R - 1 elements after row i - 1), not a copy: the
    reference's reshape-drop-reshape trick (rel_shift_bnij) without its copies. Requires a
    contiguous raw; the addresses stay inside it since R >= K + 1."""
    B, N, Q, R = raw.shape
    assert raw.is_contiguous() and R >= klen + 1
    return raw.as_strided((B, N, Q, klen), (N * Q * R, Q * R, R - 1, 1), raw.storage_offset() + Q)


def shift_gathered(raw: Tensor, positions: Tensor, qlen: int, klen: int) -> Tensor:
    """(B, N, Q', R) scores of queries at segment positions (B, Q') -> (B, N, Q', K):
    out[b, n, m, j] = raw[b, n, m, qlen - positions[b, m] + j]. With a causal table (R = K + 1)
    the future keys fall past its end: clamped, as they are masked anyway."""
    B, N, Qp, R = raw.shape
    j = torch.arange(klen, device=raw.device)
    index = (qlen - positions[:, None, :, None] + j).clamp(max=R - 1)  # (B, 1, Q', K)
    return raw.gather(3, index.expand(B, N, Qp, klen))


def relative_scores(
    q: Tensor,
    k: Tensor,
    k_r: Tensor,
    r_w_bias: Tensor,
    r_r_bias: Tensor,
    qlen: int,
    positions: Tensor | None = None,
    segment: tuple[Tensor, Tensor, Tensor] | None = None,
    mask_bias: Tensor | None = None,
) -> Tensor:
    """Scaled scores (B, N, Q, K) = (content + position + segment) / sqrt(D) + mask_bias.

    q: (B, N, Q, D) queries; k: (B, N, K, D); k_r: (P, N, R, D) projected distance encodings;
    positions: (B, Q) segment positions of the queries (None: the segment's Q rows in order);
    segment: (r_s_bias (N, D), seg_embed (2, N, D), different (B, 1, Q, K) float, 1 where query
    and key are in different segments); mask_bias: (B, 1, Q, K) with MASKED where blocked."""
    B, N, Q, D = q.shape
    K, P = k.shape[2], k_r.shape[0]
    scale = D**-0.5
    # Position term, (q + v) . k_r, on the P distance tables (each half of a bi_data batch on
    # its own); the tables are shared by the batch rows, not expanded per row as in transformers.
    qv = (q + r_r_bias[:, None]).view(P, B // P, N, Q, D)
    raw = (qv @ k_r.transpose(-1, -2)[:, None]).view(B, N, Q, -1)  # (B, N, Q, R)
    if positions is None:
        bias = shift_consecutive(raw, K)
    else:
        bias = shift_gathered(raw, positions, qlen, K)
    if segment is not None:
        r_s_bias, seg_embed, different = segment
        e = (q + r_s_bias[:, None]) @ seg_embed.permute(1, 2, 0)[None]  # (B, N, Q, 2)
        same, other = e.unbind(-1)
        bias = bias + same[..., None] + (other - same)[..., None] * different
    if mask_bias is not None:
        bias = bias + mask_bias / scale  # stays MASKED-sized: scale only multiplies it back
    # Content term fused into one batched GEMM that also adds the rest: scale * (bias + q'k^T).
    qu = (q + r_w_bias[:, None]).reshape(B * N, Q, D)
    bias = bias.reshape(B * N, Q, K)
    scores = torch.baddbmm(
        bias, qu, k.reshape(B * N, K, D).transpose(1, 2), beta=scale, alpha=scale
    )
    return scores.view(B, N, Q, K)


class RelativeAttention(nn.Module):
    """Projections, relative scores and output projection of one layer (no residual, no norm).

    State-dict names are XLNet's: q, k, v, o, r [H, N, D]; r_w_bias (u), r_r_bias (v) [N, D];
    with segments, r_s_bias [N, D] and seg_embed [2, N, D]."""

    def __init__(self, d_model: int, n_head: int, d_head: int, dropout: float, segments: bool):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, nn.Parameter(torch.empty(d_model, n_head, d_head)))
        self.r_w_bias = nn.Parameter(torch.empty(n_head, d_head))
        self.r_r_bias = nn.Parameter(torch.empty(n_head, d_head))
        if segments:
            self.r_s_bias = nn.Parameter(torch.empty(n_head, d_head))
            self.seg_embed = nn.Parameter(torch.empty(2, n_head, d_head))
        self.segments = segments
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, N * D) -> (B, N, T, D)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.d_head).transpose(1, 2)

    def forward(
        self,
        h: Tensor,
        memory: Tensor | None,
        encoding: Tensor,
        mask_bias: Tensor | None = None,
        different: Tensor | None = None,
        g: Tensor | None = None,
        g_positions: Tensor | None = None,
        g_mask_bias: Tensor | None = None,
        content: bool = True,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Attention outputs (before residual) of the content stream h (B, Q, H) and, when g
        (B, Q', H) is given, of XLNet's query stream at segment positions g_positions (B, Q'):
        it shares the keys, values and weights, and is masked by g_mask_bias (B, 1, Q', K).

        memory: (B, M, H) or None; encoding: (P, R, H) distance encodings (dropout applied);
        mask_bias: (B, 1, Q, K); different: (B, 1, Q, K) float, 1 = other segment.
        content=False: the content stream only gives keys and values (its output would be
        thrown away: the last layer of a two-stream pass), and out_h is None."""
        B, Q, H = h.shape
        ND = self.n_head * self.d_head
        q_w, k_w, v_w = (w.view(H, ND) for w in (self.q, self.k, self.v))
        if memory is None and content:  # one GEMM for q, k and v
            q, k, v = (h @ torch.cat([q_w, k_w, v_w], dim=1)).split(ND, dim=-1)
        else:  # keys and values also over the memory; queries only over the segment
            q = h @ q_w if content else None
            keys = h if memory is None else torch.cat([memory, h], dim=1)  # (B, K, H)
            k, v = (keys @ torch.cat([k_w, v_w], dim=1)).split(ND, dim=-1)
        k, v = self._heads(k), self._heads(v)  # (B, N, K, D)
        P, R, _ = encoding.shape
        k_r = (encoding @ self.r.view(H, ND)).view(P, R, self.n_head, self.d_head).transpose(1, 2)
        segment = None
        if different is not None:
            segment = (self.r_s_bias, self.seg_embed, different)
        out_h = out_g = None
        if content:
            out_h = self._attend(self._heads(q), k, v, k_r, Q, None, segment, mask_bias)
        if g is not None:
            q_g = self._heads(g @ q_w)
            if different is not None:  # the rows of the predicted positions
                index = g_positions[:, None, :, None].expand(-1, 1, -1, different.shape[-1])
                segment = (self.r_s_bias, self.seg_embed, different.gather(2, index))
            out_g = self._attend(q_g, k, v, k_r, Q, g_positions, segment, g_mask_bias)
        return out_h, out_g

    def _attend(self, q, k, v, k_r, qlen, positions, segment, mask_bias) -> Tensor:
        scores = relative_scores(
            q, k, k_r, self.r_w_bias, self.r_r_bias, qlen, positions, segment, mask_bias
        )
        probabilities = self.dropout(scores.softmax(dim=-1))
        y = probabilities @ v  # (B, N, Q, D)
        B, N, Qy, D = y.shape
        y = y.transpose(1, 2).reshape(B, Qy, N * D)
        return y @ self.o.view(-1, N * D).t()  # (B, Q, H)
