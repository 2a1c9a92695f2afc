"""ELMo's context-independent token encoder: characters -> char CNN -> highway -> projection.

Peters et al. 2018 section 3.4 and Jozefowicz et al. 2016 (the char CNN with highway layers), as
bilm-tf builds it (bilm/training.py, LanguageModel._build_word_char_embeddings). models/elmo.py
puts it under the biLM.

Shapes:
    N  real tokens       C  characters per token (50)      E  char embedding dim
    F  char filters in all                                  P  projection dim
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}  # bilm-tf options["char_cnn"]["activation"]


class Highway(nn.Module):
    """y = g * x + (1 - g) * relu(W_t x + b_t), g = sigmoid(W_g x + b_g) (Srivastava et al. 2015).

    AllenNLP's layout (rows [transform; gate] of one Linear). bilm-tf writes the gate the other
    way round, g_tf = 1 - g, so its carry bias of -2 is a gate bias of +2 here.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        nn.init.normal_(self.linear.weight, 0.0, math.sqrt(1.0 / dim))  # bilm-tf initializers
        nn.init.zeros_(self.linear.bias[:dim])
        nn.init.constant_(self.linear.bias[dim:], 2.0)  # bilm-tf b_carry = -2

    def forward(self, x: Tensor) -> Tensor:
        transform, gate = self.linear(x).chunk(2, dim=-1)  # (N, F) each
        gate = torch.sigmoid(gate)
        return gate * x + (1.0 - gate) * F.relu(transform)


class CharacterEncoder(nn.Module):
    """(B, T, C) character ids -> (B, T, P) token representations x_k (zeros at padding).

    Embed characters, convolve with filters of several widths, max-pool over the characters,
    activation, highway layers, linear projection (Jozefowicz et al. 2016 section 3.3; bilm-tf
    _build_word_char_embeddings: conv, max-pool, then activation).
    """

    def __init__(
        self,
        char_vocab_size: int,
        char_dim: int,
        filters: list[list[int]],
        activation: str,
        n_highway: int,
        projection_dim: int,
    ):
        super().__init__()
        n_filters = sum(num for _, num in filters)
        self.embedding = nn.Embedding(char_vocab_size, char_dim, padding_idx=0)
        self.convolutions = nn.ModuleList(nn.Conv1d(char_dim, n, w) for w, n in filters)
        self.activation = ACTIVATIONS[activation]
        self.highways = nn.ModuleList(Highway(n_filters) for _ in range(n_highway))
        self.projection = nn.Linear(n_filters, projection_dim)
        # bilm-tf's initializers (bilm/training.py)
        nn.init.uniform_(self.embedding.weight, -1.0, 1.0)
        nn.init.zeros_(self.embedding.weight[0])  # padding row, as AllenNLP prepends it
        for conv, (width, _) in zip(self.convolutions, filters, strict=True):
            if activation == "relu":
                nn.init.uniform_(conv.weight, -0.05, 0.05)
            else:
                nn.init.normal_(conv.weight, 0.0, math.sqrt(1.0 / (width * char_dim)))
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.projection.weight, 0.0, math.sqrt(1.0 / n_filters))
        nn.init.zeros_(self.projection.bias)

    def forward(self, char_ids: Tensor, mask: Tensor) -> Tensor:
        B, T, _ = char_ids.shape
        chars = self.embedding(char_ids[mask]).transpose(1, 2)  # (N, E, C)
        # max over the C - width + 1 positions of each filter
        pooled = [self.activation(conv(chars).amax(dim=-1)) for conv in self.convolutions]
        h = torch.cat(pooled, dim=-1)  # (N, F)
        for highway in self.highways:
            h = highway(h)
        h = self.projection(h)  # (N, P)
        out = h.new_zeros(B, T, h.shape[-1])  # (B, T, P)
        out[mask] = h
        return out
