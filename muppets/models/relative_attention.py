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
and a gather for XLNet's query stream, which asks only at the predicted positions. The two
streams share keys, values and weights, so they attend as one set of query rows: one GEMM for
each of the position, content and value products, one softmax, one output projection.

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

from muppets.models.dropout import Dropout

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
    if mem_len is not None and mem_len <= layer_input.shape[1]:  # all from the input: a view
        memory = None
    joined = layer_input if memory is None else torch.cat([memory, layer_input], dim=1)
    if mem_len is not None:
        joined = joined[:, max(joined.shape[1] - mem_len, 0) :]
    return joined.detach()  # (B, M', H)


def shift_consecutive(raw: Tensor, klen: int, qlen: int | None = None) -> Tensor:
    """(B, N, Q', R) scores against the distance table -> (B, N, Q, K) against the keys, for the
    first Q rows (qlen; all Q' when None), the segment's queries i = 0 .. Q - 1 in order:
    out[..., i, j] = raw[..., i, Q - i + j].

    A strided view of raw (row i starts R - 1 elements after row i - 1), not a copy: the
    reference's reshape-drop-reshape trick (rel_shift_bnij) without its copies. Requires a
    contiguous raw; the addresses stay inside it since R >= K + 1."""
    B, N, Qa, R = raw.shape
    Q = Qa if qlen is None else qlen
    assert raw.is_contiguous() and R >= klen + 1
    return raw.as_strided((B, N, Q, klen), (N * Qa * R, Qa * R, R - 1, 1), raw.storage_offset() + Q)


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
    consecutive: int | None = None,
) -> Tensor:
    """Scaled scores (B, N, Q, K) = (content + position + segment) / sqrt(D) + mask_bias.

    q: (B, N, Q, D) queries: the first `consecutive` rows are the segment's positions 0, 1, ...
    (default: all Q rows when positions is None, else none), the others sit at positions (B, Q -
    consecutive); k: (B, N, K, D); k_r: (P, N, R, D) projected distance encodings; segment:
    (r_s_bias (N, D), seg_embed (2, N, D), different (B, 1, Q, K) float, 1 where query and key
    are in different segments); mask_bias: (B, 1, Q, K) with MASKED where blocked.

    The segment term is added as (other - same) * different only: its "same" part is the same
    for every key of a query row, which the softmax cancels (exactly: it is shift-invariant)."""
    B, N, Q, D = q.shape
    K, P = k.shape[2], k_r.shape[0]
    if consecutive is None:
        consecutive = Q if positions is None else 0
    scale = D**-0.5
    # Position term, (q + v) . k_r, on the P distance tables (each half of a bi_data batch on
    # its own); the tables are shared by the batch rows, not expanded per row as in transformers.
    qv = (q + r_r_bias[:, None]).view(P, B // P, N, Q, D)
    raw = (qv @ k_r.transpose(-1, -2)[:, None]).view(B, N, Q, -1)  # (B, N, Q, R)
    parts = []
    if consecutive:
        parts.append(shift_consecutive(raw, K, consecutive))  # a view
    if positions is not None:
        parts.append(shift_gathered(raw[:, :, consecutive:], positions, qlen, K))
    bias = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)  # (B, N, Q, K)
    # Content term in one batched GEMM that also copies the position term in (as its input):
    # scale * (bias + (q + u) k^T).
    qu = (q + r_w_bias[:, None]).reshape(B * N, Q, D)
    kt = k.reshape(B * N, K, D).transpose(1, 2)
    scores = torch.baddbmm(bias.reshape(B * N, Q, K), qu, kt, beta=scale, alpha=scale)
    scores = scores.view(B, N, Q, K)
    if segment is not None:
        r_s_bias, seg_embed, different = segment
        e = (q + r_s_bias[:, None]) @ seg_embed.permute(1, 2, 0)[None]  # (B, N, Q, 2)
        same, other = e.unbind(-1)
        scores = scores.addcmul_(((other - same) * scale)[..., None], different)
    if mask_bias is not None:
        scores = scores.add_(mask_bias)
    return scores


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
        self.dropout = Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, N * D) -> (B, N, T, D)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.d_head).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        encoding: Tensor,
        mask_bias: Tensor | None = None,
        different: Tensor | None = None,
        qlen: int | None = None,
        positions: Tensor | None = None,
        content: bool = True,
    ) -> Tensor:
        """The attention output (before residual) of the query rows of x (B, Q + P, H): its first
        Q = qlen rows (all by default) are the segment, the content stream, which gives the keys
        and values; the P rows after them are XLNet's query stream at segment positions
        `positions` (B, P). Both streams attend in the same GEMMs (they share keys, values and
        weights); mask_bias and different (B, 1, Q + P, K) hold the rows of both.

        memory: (B, M, H) or None; encoding: (P', R, H) distance encodings (dropout applied);
        mask_bias: MASKED where blocked; different: float, 1 = other segment. content=False:
        only the P query-stream rows are attended, (B, P, H) (the content stream's output would be
        thrown away: the last layer of a two-stream pass)."""
        B, _, H = x.shape
        Q = x.shape[1] if qlen is None else qlen
        ND = self.n_head * self.d_head
        h = x[:, :Q]  # (B, Q, H) the segment
        q_w, k_w, v_w = (w.view(H, ND) for w in (self.q, self.k, self.v))
        if memory is None and content and Q == x.shape[1]:  # one GEMM for q, k and v
            q, k, v = (h @ torch.cat([q_w, k_w, v_w], dim=1)).split(ND, dim=-1)
        else:  # keys and values also over the memory; queries over the query rows
            q = (x if content else x[:, Q:]) @ q_w
            keys = h if memory is None else torch.cat([memory, h], dim=1)  # (B, K, H)
            k, v = (keys @ torch.cat([k_w, v_w], dim=1)).split(ND, dim=-1)
        if not content:  # the query stream's rows only
            rows = slice(Q, None)
            mask_bias = mask_bias[:, :, rows] if mask_bias is not None else None
            different = different[:, :, rows] if different is not None else None
        k, v = self._heads(k), self._heads(v)  # (B, N, K, D)
        P, R, _ = encoding.shape
        k_r = (encoding @ self.r.view(H, ND)).view(P, R, self.n_head, self.d_head).transpose(1, 2)
        segment = None
        if different is not None:
            segment = (self.r_s_bias, self.seg_embed, different)
        scores = relative_scores(
            self._heads(q),
            k,
            k_r,
            self.r_w_bias,
            self.r_r_bias,
            Q,
            positions,
            segment,
            mask_bias,
            consecutive=Q if content else 0,
        )
        probabilities = self.dropout(scores.softmax(dim=-1))
        y = probabilities @ v  # (B, N, Q + P, D)
        B, N, Qy, D = y.shape
        y = y.transpose(1, 2).reshape(B, Qy, N * D)
        return y @ self.o.view(-1, N * D).t()  # (B, Q + P, H)
