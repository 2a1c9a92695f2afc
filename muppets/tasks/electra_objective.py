"""ELECTRA's joint objective: generator MLM + 50 x replaced-token detection (Clark et al. 2020,
section 2, equation 1; https://arxiv.org/abs/2003.10555).

Checked point by point against google-research/electra:
  - masking (pretrain_helpers.py, mask): per sequence, max(1, min(max_predictions_per_seq,
    round(n * masked_lm_prob))) positions, n = real tokens ([CLS] and [SEP] included, the
    input_mask's sum), drawn among real tokens that are not [CLS], [SEP] or [MASK]
    (_get_candidates_mask); 85% of them become [MASK], 15% stay unchanged, none is replaced by a
    random token. The reference draws positions with replacement (tf.random.categorical) and its
    scatter_update merges duplicates; we draw them without replacement, so the count is exact
    and count_targets can know it before the forward;
  - the generator's MLM loss at masked positions (_get_masked_lm_output);
  - replacements sampled from the generator's softmax at temperature 1 by Gumbel-max, with no
    gradient (sample_from_softmax, _get_fake_data: stop_gradient; disallow_correct False);
  - discriminator labels: 1 where the sample differs from the original, else 0 (_get_fake_data);
  - discriminator BCE over all real tokens (_get_discriminator_output: weights = input_mask);
  - total = gen_weight 1.0 x MLM + disc_weight 50.0 x discriminator (configure_pretraining.py).

The loop's protocol (objectives.py): loss sums per component ("mlm": token NLLs, "disc": 50 x
token BCEs) and their target counts (masked tokens; real tokens), so k micro-batches equal one
big batch. Randomness is an argument: a torch.Generator (None: torch's default generator, whose
state the loop's checkpoints save, so a resumed run draws what the uninterrupted one draws).

The batches are the BERT-family pipeline's: their tokens are restored from the labels (the
pipeline's own masking is undone) and masked again here, as ELECTRA does, inside the step.

Shapes:
    B  batch size      T  sequence length      N  real tokens      M  masked positions
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.tasks.objectives import IGNORE


def restore_original(batch: dict[str, Tensor]) -> Tensor:
    """(B, T) the tokens before the data pipeline's masking: labels where it predicted."""
    labels = batch.get("labels")
    if labels is None:
        return batch["input_ids"]
    return torch.where(labels.ne(IGNORE), labels, batch["input_ids"])


def candidates(input_ids: Tensor, attention_mask: Tensor, special_ids: tuple[int, ...]) -> Tensor:
    """(B, T) bool: real tokens that may be masked (pretrain_helpers.py, _get_candidates_mask)."""
    specials = torch.tensor(special_ids, device=input_ids.device)
    return attention_mask.bool() & ~torch.isin(input_ids, specials)


def masked_counts(
    attention_mask: Tensor, candidate: Tensor, masked_lm_prob: float, max_predictions: int
) -> Tensor:
    """(B,) positions to mask per sequence: max(1, min(N, round(n * p))) as mask() computes it
    (tf.round and torch.round both round half to even), and never more than the candidates."""
    n = attention_mask.sum(1).double()  # (B,)
    count = torch.round(n * masked_lm_prob).long().clamp(min=1, max=max_predictions)
    return torch.minimum(count, candidate.sum(1))


def electra_mask(
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    mask_id: int,
    special_ids: tuple[int, ...],
    masked_lm_prob: float = 0.15,
    max_predictions: int = 20,
    mask_prob: float = 0.85,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(B, T) ids -> ((B, T) masked ids, (B, T) bool masked positions); new tensors.

    Positions are a uniform draw without replacement among the candidates (see the module doc);
    each masked position becomes [MASK] with probability mask_prob, else stays itself.
    """
    candidate = candidates(input_ids, attention_mask, special_ids)  # (B, T)
    count = masked_counts(attention_mask, candidate, masked_lm_prob, max_predictions)  # (B,)
    device = input_ids.device
    scores = torch.rand(input_ids.shape, generator=generator, device=device)  # (B, T)
    scores = scores.masked_fill(~candidate, 2.0)  # non-candidates sort last
    rank = scores.argsort(1).argsort(1)  # (B, T) rank of each position's score in its row
    masked = rank < count[:, None]
    to_mask = torch.rand(input_ids.shape, generator=generator, device=device) < mask_prob
    return input_ids.masked_fill(masked & to_mask, mask_id), masked


@dataclass(frozen=True)
class ElectraObjective:
    """The joint loss of an ElectraPretrainingModel (called, never taken apart: DDP's hooks)."""

    mask_id: int
    special_ids: tuple[int, ...]  # [CLS], [SEP] (and [MASK]): never masked
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    disc_weight: float = 50.0
    temperature: float = 1.0
    mask_prob: float = 0.85
    generator: torch.Generator | None = field(default=None, compare=False)
    eval_seed: int = 1234  # held-out masks and samples: the same at every evaluation
    # (logits, labels) of the held-out batches since the last summarize: the AUC is no sum.
    _held_out: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.masked_lm_prob < 1:
            raise ConfigError(f"masked_lm_prob={self.masked_lm_prob}: must be in (0, 1)")
        if self.max_predictions_per_seq < 1:
            raise ConfigError(f"max_predictions_per_seq={self.max_predictions_per_seq}: >= 1")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature}: must be > 0")

    def _forward(self, model: nn.Module, batch: dict[str, Tensor], generator):
        original = restore_original(batch)  # (B, T)
        attention = batch.get("attention_mask")
        if attention is None:
            attention = torch.ones_like(original)
        masked_ids, masked = electra_mask(
            original,
            attention,
            mask_id=self.mask_id,
            special_ids=self.special_ids,
            masked_lm_prob=self.masked_lm_prob,
            max_predictions=self.max_predictions_per_seq,
            mask_prob=self.mask_prob,
            generator=generator,
        )
        out = model(
            masked_ids,
            batch.get("attention_mask"),
            batch.get("token_type_ids"),
            masked,
            original,
            self.temperature,
            generator,
        )
        return out, original[masked]  # (M,) the generator's targets

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out, targets = self._forward(model, batch, self.generator)
        # Losses in fp32 even under autocast.
        mlm = F.cross_entropy(out.mlm_logits.float(), targets, reduction="sum")
        disc = F.binary_cross_entropy_with_logits(
            out.disc_logits.float(), out.replaced.float(), reduction="sum"
        )
        return {"mlm": mlm, "disc": self.disc_weight * disc}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        original = restore_original(batch)
        attention = batch.get("attention_mask")
        if attention is None:
            attention = torch.ones_like(original)
        candidate = candidates(original, attention, self.special_ids)
        p, cap = self.masked_lm_prob, self.max_predictions_per_seq
        mlm = int(masked_counts(attention, candidate, p, cap).sum())
        return {"mlm": mlm, "disc": int(attention.sum())}

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """Sums over the batch: generator accuracy, discriminator accuracy, replaced tokens; the
        discriminator's logits and labels are kept for the AUC (see summarize)."""
        original = restore_original(batch)
        seed = self.eval_seed * 1_000_003 + int(original.sum())  # fixed per held-out batch
        g = torch.Generator(device=original.device).manual_seed(seed)
        out, targets = self._forward(model, batch, g)
        logits = out.mlm_logits.float()
        disc = out.disc_logits.float()
        labels = out.replaced
        bce = F.binary_cross_entropy_with_logits(disc, labels.float(), reduction="sum")
        result = {
            "mlm_loss_sum": float(F.cross_entropy(logits, targets, reduction="sum")),
            "mlm_correct": float(logits.argmax(-1).eq(targets).sum()),
            "mlm_count": float(targets.numel()),
            "disc_loss_sum": self.disc_weight * float(bce),
            "disc_correct": float(disc.gt(0).eq(labels).sum()),
            "disc_count": float(labels.numel()),
            "replaced_sum": float(labels.sum()),
        }
        self._held_out.append((disc.cpu(), labels.cpu()))  # for the AUC, see summarize
        return result

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Held-out figures that are not plain ratios (the loop's evaluate calls this after the
        batches, with the sums over all of them and all ranks): the share of replaced tokens, the
        discriminator's BCE, and its ROC AUC (sklearn's roc_auc_score) over the logits of every
        held-out token since the last call, gathered from all ranks."""
        from sklearn.metrics import roc_auc_score

        count = max(sums.get("disc_count", 0.0), 1.0)
        pairs, self._held_out[:] = list(self._held_out), []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, pairs)
            pairs = [pair for part in gathered for pair in part]
        auc = float("nan")
        if pairs:
            scores = torch.cat([p[0] for p in pairs]).numpy()
            labels = torch.cat([p[1] for p in pairs]).numpy()
            if 0 < labels.sum() < len(labels):
                auc = float(roc_auc_score(labels, scores))
        return {
            "replaced_share": sums.get("replaced_sum", 0.0) / count,
            "disc_bce": sums.get("disc_loss_sum", 0.0) / self.disc_weight / count,
            "disc_auc": auc,
        }
