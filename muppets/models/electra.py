"""ELECTRA: a small masked-LM generator and a discriminator over BERT's encoder, trained jointly.

Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators"
(https://arxiv.org/abs/2003.10555); the reference is google-research/electra (run_pretraining.py,
pretrain/pretrain_helpers.py, model/modeling.py). Each tower is bert.BertModel; what differs:
  - the word, position and segment embeddings and their LayerNorm are one module shared by both
    towers (section 3.2, "tie_embeddings"), of width E (embedding_size), projected up to each
    tower's hidden size by its own `embeddings_project` Linear when the widths differ;
  - the generator is smaller (generator_hidden_size: a fraction of the discriminator's hidden size,
    the reference's get_generator_config) and has the MLM head H_g -> E with the tied decoder;
  - the discriminator has the replaced-token head (heads.ReplacedTokenHead) on every real token.
The forward runs the whole joint step the loss needs in one call (so DistributedDataParallel sees
one forward): generator at masked positions, sampling, discriminator on the corrupted input.

Shapes:
    B  batch size      T  sequence length      N  real tokens      M  masked positions
    H  discriminator hidden size      G  generator hidden size      E  embedding size
    V  vocabulary size
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.bert import BertConfig, BertEmbeddings, BertModel
from muppets.models.heads import MaskedLMHead, ReplacedTokenHead
from muppets.models.layers import initialize


@dataclass
class ElectraConfig:
    """transformers' ElectraConfig fields and defaults (the electra-small discriminator), plus the
    generator's size as the reference's configure_pretraining.py gives it: fractions of the
    discriminator's hidden size and depth."""

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    model_type: str = "electra"
    pre_layer_norm: bool = False
    generator_hidden_size: float = 0.25  # paper Table 6 (Small, Large; Base 1/3)
    generator_layers: float = 1.0

    def __post_init__(self) -> None:
        if self.model_type != "electra":
            raise ConfigError(f"config field model_type={self.model_type!r}: must be 'electra'")
        E = self.embedding_size
        if not isinstance(E, int) or isinstance(E, bool) or E < 1:
            raise ConfigError(f"config field embedding_size={E!r}: must be a positive integer")
        if isinstance(self.hidden_size, int) and E > self.hidden_size:
            # The reference factorises the embeddings (E <= H); the discriminator's
            # embeddings_project maps E up to H, it never narrows the encoder's input.
            raise ConfigError(
                f"config field embedding_size={E}: must be <= hidden_size={self.hidden_size} "
                "(the embeddings are projected up to the discriminator's hidden size)"
            )
        for name in ("generator_hidden_size", "generator_layers"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
                raise ConfigError(
                    f"config field {name}={value!r}: must be in (0, 1], a fraction of the "
                    "discriminator's (a generator larger than the discriminator is refused)"
                )
        self.discriminator_config()
        try:
            self.generator_config()
        except ConfigError as error:
            raise ConfigError(f"generator: {error.message}") from None

    def _tower(self, **sizes: Any) -> BertConfig:
        shared = {f.name for f in dataclasses.fields(BertConfig)} - {"model_type"}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in shared}
        return BertConfig(**{**values, **sizes, "model_type": "bert"})

    def discriminator_config(self) -> BertConfig:
        return self._tower()

    def generator_config(self) -> BertConfig:
        """run_pretraining.py, get_generator_config: hidden = round(H * fraction), layers =
        round(L * fraction), intermediate = 4 * hidden, heads = max(1, hidden // 64)."""
        hidden = int(round(self.hidden_size * self.generator_hidden_size))
        if hidden < 1:
            raise ConfigError(
                f"config field generator_hidden_size={self.generator_hidden_size}: gives a "
                "generator of hidden size 0"
            )
        return self._tower(
            hidden_size=hidden,
            num_hidden_layers=max(1, int(round(self.num_hidden_layers * self.generator_layers))),
            intermediate_size=4 * hidden,
            num_attention_heads=max(1, hidden // 64),
        )

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElectraConfig:
        """A config.json dict (ours or transformers'); unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def build_tower(config: BertConfig, embeddings: BertEmbeddings) -> BertModel:
    """BERT's encoder over the given (shared) embeddings, with embeddings_project E -> H when
    the widths differ (modeling.py's BertModel: "embeddings_project")."""
    tower = BertModel(config)
    tower.embeddings = embeddings
    E = embeddings.word_embeddings.embedding_dim
    if E != config.hidden_size:
        tower.embeddings_project = nn.Linear(E, config.hidden_size)
        initialize(tower.embeddings_project, config.initializer_range)
    return tower


def shared_embeddings(config: ElectraConfig) -> BertEmbeddings:
    c = config
    embeddings = BertEmbeddings(
        c.vocab_size,
        c.embedding_size,
        c.max_position_embeddings,
        c.type_vocab_size,
        c.pad_token_id,
        c.layer_norm_eps,
        c.hidden_dropout_prob,
        roberta_positions=False,
    )
    initialize(embeddings, c.initializer_range)
    return embeddings


def build_discriminator(config: ElectraConfig) -> BertModel:
    """The encoder that fine-tuning, evaluation and feature extraction use."""
    return build_tower(config.discriminator_config(), shared_embeddings(config))


@torch.no_grad()
def sample_from_softmax(
    logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """(M, V) logits -> (M,) token ids drawn from softmax(logits / temperature), by Gumbel-max:
    argmax(logits / t - log(-log(u))) (pretrain_helpers.py, sample_from_softmax, with its 1e-9
    guards; its softmax before the argmax changes nothing). No gradient flows through it."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device)  # (M, V)
    gumbel = -torch.log(-torch.log(u + 1e-9) + 1e-9)
    return (logits.float() / temperature + gumbel).argmax(-1)


class ElectraOutput(NamedTuple):
    mlm_logits: Tensor  # (M, V) generator logits at masked positions, row-major (B, T) order
    sampled: Tensor  # (M,) the generator's samples there
    disc_logits: Tensor  # (N,) discriminator logits at every real token, row-major
    replaced: Tensor  # (N,) bool: the token differs from the original (the discriminator label)


class ElectraPretrainingModel(nn.Module):
    """Generator + discriminator over shared embeddings. State-dict names: `generator.*`,
    `generator_head.*`, `discriminator.*`, `discriminator_head.*`; the shared embeddings appear
    under both towers (checkpoint.save_weights stores them once, the other name as an alias).

    A discriminator alone (a transformers ElectraForPreTraining directory) has generator None.
    """

    def __init__(self, config: ElectraConfig, with_generator: bool = True):
        super().__init__()
        c = config
        embeddings = shared_embeddings(c)
        self.discriminator = build_tower(c.discriminator_config(), embeddings)
        self.discriminator_head = ReplacedTokenHead(
            c.hidden_size, c.hidden_act, c.initializer_range
        )
        self.generator, self.generator_head = None, None
        if with_generator:
            g = c.generator_config()
            self.generator = build_tower(g, embeddings)
            self.generator_head = MaskedLMHead(
                g.hidden_size,
                c.vocab_size,
                c.hidden_act,
                c.layer_norm_eps,
                c.initializer_range,
                embedding_size=c.embedding_size,
            )
            self.generator.pooler.requires_grad_(False)
        # Pretraining reads no pooler: kept (fine-tuning starts from it, as the reference's
        # get_pooled_output does) but frozen, so every trainable parameter gets a gradient (DDP).
        self.discriminator.pooler.requires_grad_(False)

    @property
    def encoder(self) -> BertModel:
        """The discriminator: the encoder of every downstream use (the encoder protocol)."""
        return self.discriminator

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        masked_positions: Tensor,
        original_ids: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ElectraOutput:
        """input_ids: (B, T) the masked input; masked_positions: (B, T) bool, real tokens the
        generator predicts; original_ids: (B, T) the uncorrupted tokens; generator: the
        torch.Generator of the sampling (None: torch's default)."""
        if self.generator is None:
            raise ValueError("this ELECTRA model has no generator (a discriminator alone)")
        real = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            real = attention_mask.bool()  # (B, T)
        # Generator: the last layer and the vocabulary projection at masked positions only.
        hidden = self.generator.forward_at(
            input_ids, attention_mask, token_type_ids, masked_positions
        )  # (M, G)
        if hidden.shape[0] != int(masked_positions.sum()):
            raise ValueError("masked positions must be real tokens")
        words = self.discriminator.embeddings.word_embeddings.weight  # (V, E), tied decoder
        mlm_logits = self.generator_head(hidden, words)  # (M, V)
        # run_pretraining.py, _get_fake_data: sample, stop_gradient, scatter into the input;
        # labels = masked and different from the original (a correct sample is "original").
        sampled = sample_from_softmax(mlm_logits.detach(), temperature, generator)  # (M,)
        fake = original_ids.masked_scatter(masked_positions, sampled)  # (B, T)
        replaced = fake.ne(original_ids)[real]  # (N,)
        states = self.discriminator.forward_at(fake, attention_mask, token_type_ids, real)
        disc_logits = self.discriminator_head(states)  # (N,)
        return ElectraOutput(mlm_logits, sampled, disc_logits, replaced)
