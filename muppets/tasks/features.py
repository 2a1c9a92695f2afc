"""Feature-based transfer: a frozen encoder's layers, mixed, under small trainable task models.

Peters et al. 2018 section 3.3: the biLM stays frozen, a task learns
    ELMo_k = gamma * sum_j softmax(s)_j * h_kj        (eq. 1)
and feeds it to its own model. ScalarMix follows AllenNLP (allennlp/modules/scalar_mix.py),
including its optional layer normalisation, which pools the statistics over every real position
of the batch and every dimension (not per token): with do_layer_norm the features of a sentence
depend on the rest of its batch, exactly as in AllenNLP.

A feature source is any module `(inputs, mask) -> (features (B, T, D), mask (B, T))` with an
`output_dim`: FrozenFeatures (frozen encoder + ScalarMix; ELMo, or BERT through the same
forward_all_layers) or EmbeddingFeatures (a trainable word embedding: the non-contextual
baseline). The task models take a source and train everything in it that requires a gradient:
a biLSTM or a bag of embeddings under a classifier, and for tagging a biLSTM tagger or its
context-free counterpart, a softmax over each word's own features.

Shapes:
    B  batch size     T  tokens     D  feature dim     H  LSTM hidden size     K  labels
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class ScalarMix(nn.Module):
    """gamma * sum_j softmax(s)_j * h_j over num_layers tensors (B, T, D); s = 0, gamma = 1 at
    the start (AllenNLP's defaults), so the mix starts as the plain mean of the layers."""

    def __init__(self, num_layers: int, do_layer_norm: bool = False):
        super().__init__()
        self.num_layers = num_layers
        self.do_layer_norm = do_layer_norm
        self.scalar_parameters = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: list[Tensor], mask: Tensor | None = None) -> Tensor:
        if len(layers) != self.num_layers:
            raise ValueError(f"ScalarMix of {self.num_layers} layers got {len(layers)}")
        if self.do_layer_norm:
            mask = torch.ones(layers[0].shape[:2], dtype=torch.bool) if mask is None else mask
            layers = [masked_layer_norm(h, mask.to(h.device)) for h in layers]
        weights = F.softmax(self.scalar_parameters, dim=0)  # (J,)
        mixed = sum(w * h for w, h in zip(weights, layers, strict=True))  # (B, T, D)
        return self.gamma * mixed


def masked_layer_norm(h: Tensor, mask: Tensor) -> Tensor:
    """AllenNLP ScalarMix._do_layer_norm: one mean and variance over all real positions and all
    dimensions of the batch; padding neither counts nor changes the real outputs."""
    keep = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    n = keep.sum() * h.shape[-1]
    mean = (h * keep).sum() / n
    variance = (((h * keep - mean) * keep) ** 2).sum() / n
    return (h - mean) / torch.sqrt(variance + 1e-13)  # tiny_value_of_dtype(float32)


def remove_sentence_boundaries(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop <S> and </S> of every right-padded sentence: (B, T, D) -> (B, T - 2, D) with the new
    mask (AllenNLP util.remove_sentence_boundaries); padding stays zero."""
    lengths = mask.sum(dim=1)  # (B,) including both boundaries
    t = torch.arange(mask.shape[1] - 2, device=mask.device)
    new_mask = t < (lengths - 2).unsqueeze(1)  # (B, T - 2)
    return features[:, 1:-1] * new_mask.unsqueeze(-1).to(features.dtype), new_mask


class FrozenFeatures(nn.Module):
    """A frozen encoder's L + 1 layers (forward_all_layers) mixed by a trainable ScalarMix.

    The encoder's parameters never require a gradient, its forward runs under no_grad, and it
    stays in eval mode (no dropout) whatever mode the task model is put in. The encoder is a
    submodule, so its weights are saved with the task model's state dict.
    """

    def __init__(
        self,
        encoder: nn.Module,
        do_layer_norm: bool = False,
        remove_boundaries: bool = False,
    ):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.mix = ScalarMix(encoder.num_layers + 1, do_layer_norm)
        self.output_dim = encoder.hidden_size
        self.remove_boundaries = remove_boundaries  # ELMo inputs made with <S> ... </S>

    def train(self, mode: bool = True) -> FrozenFeatures:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, inputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            layers = self.encoder.forward_all_layers(inputs, mask)  # L + 1 x (B, T, D)
        mask = mask.bool()
        # AllenNLP's Elmo mixes with the boundaries in place, then removes them.
        features = self.mix(layers, mask)  # (B, T, D)
        if self.remove_boundaries:
            features, mask = remove_sentence_boundaries(features, mask)
        return features, mask


class EmbeddingFeatures(nn.Module):
    """(B, T) word ids -> trainable embeddings (B, T, D), zero at padding: the baseline."""

    def __init__(self, vocab_size: int, dim: int, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.output_dim = dim

    def forward(self, inputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        mask = mask.bool()
        x = self.embedding(inputs)  # (B, T, D)
        return x * mask.unsqueeze(-1).to(x.dtype), mask


class BiLSTM(nn.Module):
    """(B, T, D) + right-padded mask -> states (B, T, 2H) and final states (B, 2H).

    Packed by the real lengths, so the final forward state is the one at the last real token and
    the final backward state the one at the first token; padding reaches neither.
    """

    def __init__(self, input_dim: int, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_size, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # an empty sentence (e.g. only <S> </S>, removed) runs one zero step instead of failing
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        output, (h_n, _) = self.lstm(packed)  # h_n (2, B, H), back in batch order
        states, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        return states, torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, T, 2H), (B, 2H)


class ClassifierHead(nn.Module):
    """Sentence vector u (B, E), or a pair (u, v) combined as [u; v; |u - v|; u * v] (InferSent,
    Conneau et al. 2017 section 3.2) -> dropout -> optional tanh hidden layer -> (B, K) logits."""

    def __init__(
        self,
        input_dim: int,
        num_labels: int,
        pairs: bool = False,
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.pairs = pairs
        dim = 4 * input_dim if pairs else input_dim
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size:
            layers += [nn.Linear(dim, hidden_size), nn.Tanh(), nn.Dropout(dropout)]
            dim = hidden_size
        self.mlp = nn.Sequential(*layers, nn.Linear(dim, num_labels))

    def forward(self, u: Tensor, v: Tensor | None = None) -> Tensor:
        if self.pairs != (v is not None):
            raise ValueError("a pair head needs two sentences, a single head one")
        if v is not None:
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4E)
        return self.mlp(u)


class BiLSTMClassifier(nn.Module):
    """features -> dropout -> biLSTM -> [final forward; final backward] -> ClassifierHead."""

    def __init__(
        self,
        features: nn.Module,
        hidden_size: int,
        num_labels: int,
        pairs: bool = False,
        dropout: float = 0.0,
        mlp_hidden_size: int | None = None,
    ):
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout(dropout)
        self.bilstm = BiLSTM(features.output_dim, hidden_size)
        self.head = ClassifierHead(2 * hidden_size, num_labels, pairs, mlp_hidden_size, dropout)

    def encode(self, inputs: Tensor, mask: Tensor) -> Tensor:
        x, mask = self.features(inputs, mask)  # (B, T, D)
        return self.bilstm(self.dropout(x), mask)[1]  # (B, 2H)

    def forward(
        self,
        inputs: Tensor,
        mask: Tensor,
        inputs_b: Tensor | None = None,
        mask_b: Tensor | None = None,
    ) -> Tensor:
        """(B, K) logits of one sentence, or of a pair when inputs_b / mask_b are given."""
        v = None if inputs_b is None else self.encode(inputs_b, mask_b)
        return self.head(self.encode(inputs, mask), v)


class BagOfEmbeddingsClassifier(nn.Module):
    """features -> masked mean over real tokens -> ClassifierHead (hidden layer optional)."""

    def __init__(
        self,
        features: nn.Module,
        num_labels: int,
        pairs: bool = False,
        dropout: float = 0.0,
        mlp_hidden_size: int | None = None,
    ):
        super().__init__()
        self.features = features
        self.head = ClassifierHead(features.output_dim, num_labels, pairs, mlp_hidden_size, dropout)

    def encode(self, inputs: Tensor, mask: Tensor) -> Tensor:
        x, mask = self.features(inputs, mask)  # (B, T, D)
        keep = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, D)

    def forward(
        self,
        inputs: Tensor,
        mask: Tensor,
        inputs_b: Tensor | None = None,
        mask_b: Tensor | None = None,
    ) -> Tensor:
        """(B, K) logits of one sentence, or of a pair when inputs_b / mask_b are given."""
        v = None if inputs_b is None else self.encode(inputs_b, mask_b)
        return self.head(self.encode(inputs, mask), v)


class BiLSTMTagger(nn.Module):
    """features -> dropout -> biLSTM -> dropout -> per-token (B, T, K) logits.

    T is the feature source's length (T - 2 when it removes sentence boundaries); the labels must
    align with it, with the loss's ignore index at padding.
    """

    def __init__(
        self, features: nn.Module, hidden_size: int, num_labels: int, dropout: float = 0.0
    ):
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout(dropout)
        self.bilstm = BiLSTM(features.output_dim, hidden_size)
        self.output = nn.Linear(2 * hidden_size, num_labels)

    def forward(self, inputs: Tensor, mask: Tensor) -> Tensor:
        x, mask = self.features(inputs, mask)
        states, _ = self.bilstm(self.dropout(x), mask)  # (B, T, 2H)
        return self.output(self.dropout(states))  # (B, T, K)


class TokenSoftmaxTagger(nn.Module):
    """features -> dropout -> per-word (B, T, K) logits: the bag-of-embeddings tagger.

    BiLSTMTagger without its biLSTM: a word's logits depend on its own features only, so over
    ELMo all context is ELMo's (the comparison with the biLSTM tagger measures what the task
    model adds), and over random embeddings it is a word -> tag lookup. T as in BiLSTMTagger.
    """

    def __init__(self, features: nn.Module, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(features.output_dim, num_labels)

    def forward(self, inputs: Tensor, mask: Tensor) -> Tensor:
        x, _ = self.features(inputs, mask)  # (B, T, D), zero at padding
        return self.output(self.dropout(x))  # (B, T, K)
