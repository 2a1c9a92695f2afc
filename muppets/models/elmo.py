"""ELMo's bidirectional language model (biLM).

Peters et al. 2018, "Deep contextualized word representations" (https://arxiv.org/abs/1802.05365),
with the architecture of Jozefowicz et al. 2016, "Exploring the Limits of Language Modeling"
(https://arxiv.org/abs/1602.02410), as built by bilm-tf (bilm/training.py, LanguageModel) and
read by AllenNLP (allennlp/modules/elmo.py, elmo_lstm.py):

    characters -> char CNN -> highway -> projection = x_k    (context-independent, section 3.4)
    x_k -> L forward LSTMP layers  -> softmax predicts token k + 1
    x_k -> L backward LSTMP layers -> softmax predicts token k - 1
    (token encoder and softmax shared by both directions, LSTM weights not: section 3.1)

The representations (section 3.2) are R_k = {[x_k; x_k], [h_fwd_kj; h_bwd_kj] for j = 1..L}.

LSTMP and clipping. bilm-tf uses TF's LSTMCell(num_proj, cell_clip=3, proj_clip=3): the cell is
clipped to [-3, 3] after each update and the projected state as well. torch.nn.LSTM(proj_size=)
computes the same cell without the clipping, fast (one fused kernel per layer). ProjectedLstm
keeps its weights in an nn.LSTM and runs that kernel when both clips are None; otherwise it runs
an exact step-by-step loop over the same weights (input projections of all steps in one matmul
first). Both paths share state-dict names, so a model trained with clipping can be run without it
(approximately, as long as the clips rarely bind). The original and small presets clip.

Padding: the mask must be right-padded (real tokens first). The forward LSTM never sees later
positions, so padding at the end cannot reach real positions; the backward LSTM runs forward over
each sentence reversed within its own length (reverse_within_lengths), so its padding is at the
end too. The char CNN runs on real tokens only.

Shapes:
    B  batch size        T  tokens (padded)          C  characters per token (50)
    N  real tokens       E  char embedding dim       F  char filters in all (2048 original)
    P  projection dim    S  LSTM cell dim            V  output word vocabulary
    L  LSTM layers       M  positions with a target
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.char_cnn import ACTIVATIONS, CharacterEncoder
from muppets.models.lm_softmax import softmax_nll_sum

IGNORE = -100  # target of positions that predict nothing, as in the other objectives


def _original_filters() -> list[list[int]]:
    # [width, number] of bilm-tf's released options.json: 2048 filters in all (section 3.4).
    return [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]


@dataclass
class ElmoConfig:
    """Defaults are the original ELMo (bilm-tf options.json of the 5.5B / 1B Word models)."""

    vocab_size: int = 793471  # output words of the softmax (1B Word Benchmark vocabulary)
    char_vocab_size: int = 262  # tokenization/characters.py: 0 padding + 261 shifted ids
    max_characters_per_token: int = 50
    char_embedding_dim: int = 16
    filters: list[list[int]] = field(default_factory=_original_filters)
    activation: str = "relu"
    n_highway: int = 2
    projection_dim: int = 512
    cell_dim: int = 4096
    num_layers: int = 2
    cell_clip: float | None = 3.0  # None: no clipping (with proj_clip None: nn.LSTM fast path)
    proj_clip: float | None = 3.0
    dropout: float = 0.1
    share_softmax: bool = True  # one softmax for both directions, as bilm-tf
    # None: full softmax. Cutoffs (e.g. [2000, 10000]): adaptive softmax over a vocabulary sorted
    # by frequency, for big vocabularies (bilm-tf trains with a sampled softmax of 8192 instead).
    adaptive_softmax_cutoffs: list[int] | None = None
    model_type: str = "elmo"

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS + ("n_highway",):
            value = getattr(self, name)
            if not _is_int(value) or value < (0 if name == "n_highway" else 1):
                _fail(name, value, "must be a positive integer (n_highway: >= 0)")
        self.filters = [list(pair) for pair in self.filters]
        for pair in self.filters:
            if len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
                _fail("filters", self.filters, "each entry must be [width, number] >= 1")
            if pair[0] > self.max_characters_per_token:
                _fail("filters", self.filters, "a width exceeds max_characters_per_token")
        if not self.filters:
            _fail("filters", self.filters, "needs at least one [width, number]")
        if self.activation not in ACTIVATIONS:
            _fail("activation", self.activation, "must be one of " + ", ".join(ACTIVATIONS))
        if self.projection_dim >= self.cell_dim:
            _fail("projection_dim", self.projection_dim, "must be below cell_dim (LSTMP)")
        for name in ("cell_clip", "proj_clip"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                _fail(name, value, "must be positive or None")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            _fail("dropout", self.dropout, "must be in [0, 1)")
        if self.adaptive_softmax_cutoffs is not None:
            cutoffs = self.adaptive_softmax_cutoffs = list(self.adaptive_softmax_cutoffs)
            bounds = [0, *cutoffs, self.vocab_size]
            if not cutoffs or not all(map(_is_int, cutoffs)) or bounds != sorted(set(bounds)):
                _fail("adaptive_softmax_cutoffs", cutoffs, "must increase within (0, vocab_size)")
            if self.projection_dim < 4 ** len(cutoffs):  # tail i has projection_dim / 4^(i+1)
                _fail("adaptive_softmax_cutoffs", cutoffs, "too many for the projection_dim")
        if self.model_type != "elmo":
            _fail("model_type", self.model_type, "must be 'elmo'")

    @property
    def hidden_size(self) -> int:
        """Width of every representation layer: [forward; backward]."""
        return 2 * self.projection_dim

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included (saved as config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElmoConfig:
        """Read a config.json dict; unknown keys are ignored, as in BertConfig.from_dict."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


_POSITIVE_INTS = (
    "vocab_size",
    "char_vocab_size",
    "max_characters_per_token",
    "char_embedding_dim",
    "projection_dim",
    "cell_dim",
    "num_layers",
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(name: str, value: object, rule: str) -> None:
    raise ConfigError(f"config field {name}={value!r}: {rule}")


class ProjectedLstm(nn.Module):
    """One direction of one layer: (B, T, I) -> (B, T, P), an LSTM whose state is projected to P
    (LSTMP, Sak et al. 2014) with TF LSTMCell's clipping (cell_clip, proj_clip; see the top)."""

    def __init__(
        self,
        input_size: int,
        cell_size: int,
        projection_size: int,
        cell_clip: float | None,
        proj_clip: float | None,
    ):
        super().__init__()
        self.lstm = m = nn.LSTM(input_size, cell_size, proj_size=projection_size, batch_first=True)
        self.cell_clip = cell_clip
        self.proj_clip = proj_clip
        # TF's default glorot_uniform over LSTMCell's one kernel [inputs; state] -> 4S gates
        bound = math.sqrt(6.0 / (input_size + projection_size + 4 * cell_size))
        nn.init.uniform_(m.weight_ih_l0, -bound, bound)
        nn.init.uniform_(m.weight_hh_l0, -bound, bound)
        nn.init.xavier_uniform_(m.weight_hr_l0)
        nn.init.zeros_(m.bias_ih_l0)
        nn.init.zeros_(m.bias_hh_l0)
        nn.init.ones_(m.bias_ih_l0[cell_size : 2 * cell_size])  # TF LSTMCell's forget_bias=1.0

    def forward(self, x: Tensor) -> Tensor:
        if self.cell_clip is None and self.proj_clip is None:
            return self.lstm(x)[0]
        m = self.lstm
        B = x.shape[0]
        gates_x = F.linear(x, m.weight_ih_l0, m.bias_ih_l0 + m.bias_hh_l0)  # (B, T, 4S)
        h = x.new_zeros(B, m.proj_size)  # (B, P)
        c = x.new_zeros(B, m.hidden_size)  # (B, S)
        outputs = []
        # unbind, not gates_x[:, t]: the backward of T slices would add T full-size zero tensors
        for gates_t in gates_x.unbind(1):
            gates = gates_t + F.linear(h, m.weight_hh_l0)  # (B, 4S)
            i, f, g, o = gates.chunk(4, dim=1)  # torch's gate order
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if self.cell_clip is not None:  # TF LSTMCell: clip the cell, then the output
                c = c.clamp(-self.cell_clip, self.cell_clip)
            h = F.linear(torch.sigmoid(o) * torch.tanh(c), m.weight_hr_l0)  # (B, P)
            if self.proj_clip is not None:
                h = h.clamp(-self.proj_clip, self.proj_clip)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, P)


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, ...) -> (B, T, ...) with each row's first lengths[b] steps reversed, padding kept."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).expand(B, T)  # (B, T)
    n = lengths.unsqueeze(1)  # (B, 1)
    index = torch.where(t < n, n - 1 - t, t)  # (B, T)
    index = index.view(B, T, *[1] * (x.dim() - 2)).expand_as(x)
    return x.gather(1, index)


def sentence_targets(word_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) word ids of whole sentences -> (forward_targets, backward_targets), each (B, T):
    token t + 1, resp. t - 1, and IGNORE where there is none. Streams of windows (bilm-tf's
    LMDataset) bring their own targets, since those cross the window's ends."""
    mask = mask.bool()
    forward_targets = torch.full_like(word_ids, IGNORE)
    backward_targets = torch.full_like(word_ids, IGNORE)
    forward_targets[:, :-1] = word_ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE)
    backward_targets[:, 1:] = word_ids[:, :-1].masked_fill(~mask[:, 1:], IGNORE)
    return forward_targets, backward_targets


def _nll_sum(softmax: nn.Module, h: Tensor, targets: Tensor) -> Tensor:
    """Summed -log p(target | h) over (M, P) states."""
    if targets.numel() == 0:
        return h.sum() * 0.0  # keeps the graph (and DDP) intact
    if isinstance(softmax, nn.AdaptiveLogSoftmaxWithLoss):
        return -softmax(h, targets).output.sum()
    # = F.cross_entropy(softmax(h), targets, reduction="sum"), 2x faster to train (lm_softmax.py)
    return softmax_nll_sum(h, softmax.weight, softmax.bias, targets)


class ElmoBiLM(nn.Module):
    """Token encoder, forward and backward LSTMP stacks, shared softmax.

    Encoder protocol: `hidden_size` (2P), `num_layers` (L) and `forward_all_layers`, which returns
    L + 1 tensors (B, T, 2P) like BertModel's. The inputs are character ids, not word ids.
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        c = self.config = config
        self.hidden_size = c.hidden_size
        self.num_layers = c.num_layers
        self.token_encoder = CharacterEncoder(
            c.char_vocab_size,
            c.char_embedding_dim,
            c.filters,
            c.activation,
            c.n_highway,
            c.projection_dim,
        )

        def stack() -> nn.ModuleList:
            P, S = c.projection_dim, c.cell_dim
            return nn.ModuleList(
                ProjectedLstm(P, S, P, c.cell_clip, c.proj_clip) for _ in range(c.num_layers)
            )

        self.forward_lstm = stack()
        self.backward_lstm = stack()
        self.dropout = nn.Dropout(c.dropout)
        self.softmax = self._make_softmax()
        self.backward_softmax = None if c.share_softmax else self._make_softmax()

    def _make_softmax(self) -> nn.Module:
        c = self.config
        if c.adaptive_softmax_cutoffs is None:
            softmax = nn.Linear(c.projection_dim, c.vocab_size)
            nn.init.normal_(softmax.weight, 0.0, 1.0 / math.sqrt(c.projection_dim))  # bilm-tf
            nn.init.zeros_(softmax.bias)
            return softmax
        return nn.AdaptiveLogSoftmaxWithLoss(
            c.projection_dim, c.vocab_size, c.adaptive_softmax_cutoffs, div_value=4.0
        )

    def _run(self, layers: nn.ModuleList, x: Tensor, keep: Tensor) -> list[Tensor]:
        """One direction: L outputs (B, T, P). bilm-tf wraps each cell as
        DropoutWrapper(ResidualWrapper(cell)) from layer 2 on: the residual adds the dropped-out
        input; layer 1 has no residual from x_k."""
        states = []
        for j, lstm in enumerate(layers):
            inputs = self.dropout(x)
            h = lstm(inputs)  # (B, T, P)
            if j > 0:
                h = h + inputs
            x = h * keep  # zeros at padding
            states.append(x)
        return states

    def _states(self, char_ids: Tensor, mask: Tensor | None) -> tuple[Tensor, list, list]:
        """x (B, T, P), forward states [L x (B, T, P)], backward states [L x (B, T, P)]."""
        mask = char_ids.ne(0).any(-1) if mask is None else mask.bool()  # (B, T)
        lengths = mask.sum(dim=1)  # (B,)
        t = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, t < lengths.unsqueeze(1)):
            raise ValueError("ElmoBiLM needs a right-padded mask (real tokens first)")
        x = self.token_encoder(char_ids, mask)  # (B, T, P)
        keep = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        forward_states = self._run(self.forward_lstm, x, keep)
        reversed_states = self._run(self.backward_lstm, reverse_within_lengths(x, lengths), keep)
        backward_states = [reverse_within_lengths(h, lengths) for h in reversed_states]
        return x, forward_states, backward_states

    def forward(self, char_ids: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """(B, T, C) ids and (B, T) mask (default: tokens with any non-zero id) -> L + 1 tensors
        (B, T, 2P): [x; x], then [forward; backward] of every layer; zeros at padding."""
        x, forward_states, backward_states = self._states(char_ids, mask)
        layers = [torch.cat([x, x], dim=-1)]
        for f, b in zip(forward_states, backward_states, strict=True):
            layers.append(torch.cat([f, b], dim=-1))  # (B, T, 2P)
        return layers

    def forward_all_layers(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> list[Tensor]:
        """Encoder protocol: input_ids are (B, T, C) character ids; token_type_ids is unused."""
        return self(input_ids, attention_mask)

    def lm_loss(
        self,
        char_ids: Tensor,
        mask: Tensor | None,
        forward_targets: Tensor,
        backward_targets: Tensor,
    ) -> tuple[Tensor, int]:
        """(summed NLL of both directions, number of targets). Targets are (B, T) word ids,
        IGNORE where nothing is predicted (see sentence_targets). Dividing by the count gives
        bilm-tf's 0.5 * (forward mean + backward mean) when both directions have equal counts."""
        mask = char_ids.ne(0).any(-1) if mask is None else mask.bool()
        _, forward_states, backward_states = self._states(char_ids, mask)
        picked = []
        for states, targets in (
            (forward_states[-1], forward_targets),
            (backward_states[-1], backward_targets),
        ):
            where = mask & targets.ne(IGNORE)  # (B, T)
            picked.append((self.dropout(states[where]), targets[where]))  # (M, P), (M,)
        (hf, yf), (hb, yb) = picked
        if self.backward_softmax is None:  # one softmax call for both directions
            loss = _nll_sum(self.softmax, torch.cat([hf, hb]), torch.cat([yf, yb]))
        else:
            loss = _nll_sum(self.softmax, hf, yf) + _nll_sum(self.backward_softmax, hb, yb)
        return loss, int(yf.numel() + yb.numel())


PRESETS: dict[str, dict[str, Any]] = {
    # For tests: every block present, a few thousand parameters.
    "elmo-tiny": {
        "vocab_size": 50,
        "char_embedding_dim": 4,
        "filters": [[1, 4], [2, 4], [3, 8]],
        "n_highway": 1,
        "projection_dim": 8,
        "cell_dim": 16,
        "dropout": 0.0,
    },
    # About 750 tokens/s per CPU core for forward + backward (batch 32 x 20): a few epochs of the
    # bundled sample in 30 minutes. Not AllenNLP's released "small" (1024 cells, 2048 filters).
    "elmo-small": {
        "vocab_size": 10000,
        "char_embedding_dim": 16,
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128]],
        "n_highway": 1,
        "projection_dim": 64,
        "cell_dim": 512,
    },
    # Peters et al. 2018 section 3.4 / bilm-tf options.json: 2 x 4096 cells, 512 projection.
    "elmo-original": dataclasses.asdict(ElmoConfig()),
}
