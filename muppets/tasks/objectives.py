"""Pretraining objectives: masked LM (Devlin et al. 2019 section 3.1, task 1), next-sentence
prediction (task 2), sentence-order prediction (ALBERT, Lan et al. 2020 section 4.1), RoBERTa's
MLM alone (Liu et al. 2019 section 4.2), SpanBERT's MLM + span boundary objective (Joshi et al.
2020 section 3.2); and ELMo's biLM loss (Peters et al. 2018 section 3.1).

The contract with the training loop: an objective returns loss SUMS per component and counts its
targets; the loop divides each component's sum by its count over the whole accumulated batch and
adds the components. k micro-batches then equal one big batch exactly, however many masked tokens
each micro-batch holds (see total_loss).

Batches: input_ids, attention_mask, token_type_ids (B, T); labels (B, T) with -100 where nothing is
predicted; next_sentence_label (B,) for NSP, and for SOP (or sentence_order_label: 1 = swapped).

Shapes:
    B  batch size      T  sequence length      V  vocabulary size      M  masked positions
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.elmo import ElmoBiLM

IGNORE = -100  # label of positions (and pairs) that are not predicted, as in transformers


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Loss sums per component, e.g. {"mlm": sum of token NLLs, "nsp": sum of pair NLLs}."""
        ...

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        """Targets per component in this batch (masked tokens; pairs)."""
        ...

    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """Evaluation sums and counts, e.g. mlm_loss_sum, mlm_correct, mlm_count."""
        ...


def total_loss(loss_sums: dict[str, Tensor], counts: dict[str, int]) -> Tensor:
    """The loop's reduction: each component's sum / its whole-batch count, added up.

    counts must be summed over every micro-batch of the optimizer step; a component without
    targets in the whole step contributes 0.
    """
    return sum(s / max(counts[name], 1) for name, s in loss_sums.items())


@dataclass(frozen=True)
class MaskedLMObjective:
    """MLM, plus a sentence-pair task on the pooled vector when pair_task is "nsp" or "sop".

    The model is a heads.PretrainingModel (or a DDP wrapper of one): it is called, never taken
    apart, so DistributedDataParallel's hooks see the forward pass.
    """

    pair_task: str | None = None  # None | "nsp" | "sop"

    def __post_init__(self) -> None:
        if self.pair_task not in (None, "nsp", "sop"):
            raise ConfigError(f"pair_task={self.pair_task!r}: must be None, 'nsp' or 'sop'")

    def _pair_labels(self, batch: dict[str, Tensor]) -> Tensor:
        keys = ["next_sentence_label"]
        if self.pair_task == "sop":
            keys.insert(0, "sentence_order_label")
        for key in keys:
            if key in batch:
                return batch[key]
        raise ConfigError(f"objective with {self.pair_task} needs the batch key {keys[0]!r}")

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]):
        labels = batch["labels"]
        masked = labels.ne(IGNORE)  # (B, T)
        out = model(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"), masked
        )
        if self.pair_task is not None and out.pair_logits is None:
            raise ConfigError(f"objective with {self.pair_task} needs a model with a pair head")
        # Cross-entropy in fp32 even under autocast: logits may be bf16/fp16.
        return out.mlm_logits.float(), labels[masked], out.pair_logits

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, targets, pair_logits = self._forward(model, batch)  # (M, V), (M,)
        sums = {"mlm": F.cross_entropy(logits, targets, reduction="sum")}
        if self.pair_task is not None:
            pair_labels = self._pair_labels(batch)  # (B,)
            sums[self.pair_task] = F.cross_entropy(
                pair_logits.float(), pair_labels, reduction="sum", ignore_index=IGNORE
            )
        return sums

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        counts = {"mlm": int(batch["labels"].ne(IGNORE).sum())}
        if self.pair_task is not None:
            counts[self.pair_task] = int(self._pair_labels(batch).ne(IGNORE).sum())
        return counts

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        logits, targets, pair_logits = self._forward(model, batch)
        result = {
            "mlm_loss_sum": float(F.cross_entropy(logits, targets, reduction="sum")),
            "mlm_correct": float(logits.argmax(-1).eq(targets).sum()),
            "mlm_count": float(targets.numel()),
        }
        if self.pair_task is not None:
            labels = self._pair_labels(batch)
            kept = labels.ne(IGNORE)
            name = self.pair_task
            result[f"{name}_loss_sum"] = float(
                F.cross_entropy(pair_logits.float()[kept], labels[kept], reduction="sum")
            )
            result[f"{name}_correct"] = float(pair_logits.argmax(-1)[kept].eq(labels[kept]).sum())
            result[f"{name}_count"] = float(kept.sum())
        return result


class SpanBoundaryObjective:
    """SpanBERT (Joshi et al. 2020, section 3.2): L = MLM + SBO, summed over every token of the
    masked spans; the model is models/span_boundary.SpanBertModel. Components "mlm" and "sbo",
    each divided by its number of masked tokens (the same number)."""

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]):
        labels = batch["labels"]
        masked = labels.ne(IGNORE)  # (B, T)
        out = model(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"), masked
        )
        return out.logits.float(), labels[masked]  # (2M, V): MLM rows then SBO rows; (M,)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, targets = self._forward(model, batch)
        # One cross-entropy over both heads' rows (each row's loss is the same as alone).
        losses = F.cross_entropy(logits, targets.repeat(2), reduction="none")  # (2M,)
        mlm, sbo = losses.view(2, len(targets)).sum(1)
        return {"mlm": mlm, "sbo": sbo}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        n = int(batch["labels"].ne(IGNORE).sum())
        return {"mlm": n, "sbo": n}

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        result = {}
        both, targets = self._forward(model, batch)
        for name, logits in zip(
            ("mlm", "sbo"), both.view(2, len(targets), both.shape[-1]), strict=True
        ):
            result[f"{name}_loss_sum"] = float(F.cross_entropy(logits, targets, reduction="sum"))
            result[f"{name}_correct"] = float(logits.argmax(-1).eq(targets).sum())
            result[f"{name}_count"] = float(targets.numel())
        return result


# Objective names used by configs and the CLI.
OBJECTIVES: dict[str, MaskedLMObjective | SpanBoundaryObjective] = {
    "mlm": MaskedLMObjective(),  # RoBERTa
    "mlm+nsp": MaskedLMObjective("nsp"),  # BERT
    "mlm+sop": MaskedLMObjective("sop"),  # ALBERT-style sentence order
    "mlm+sbo": SpanBoundaryObjective(),  # SpanBERT
}


def objective_for(name: str) -> MaskedLMObjective | SpanBoundaryObjective:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


# ----------------------------------------------------------------------------- ELMo biLM


class BiLMLoss(nn.Module):
    """ElmoBiLM with `lm_loss` as its forward. The loop's objective must *call* the model, so that
    DistributedDataParallel's hooks see the forward pass; this module shares the biLM's
    sub-modules under the same names (no prefix), so its state dict is ElmoBiLM's."""

    def __init__(self, bilm: ElmoBiLM):
        super().__init__()
        for name, child in bilm.named_children():
            self.add_module(name, child)
        self.__dict__["bilm"] = bilm  # not registered: its parameters are the children above

    def forward(self, char_ids, mask, forward_targets, backward_targets) -> tuple[Tensor, int]:
        return self.bilm.lm_loss(char_ids, mask, forward_targets, backward_targets)


class BiLMObjective:
    """One component, "lm": NLL summed over the forward and backward targets of the batch."""

    def _loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        return model(
            batch["char_ids"],
            batch["attention_mask"],
            batch["forward_targets"],
            batch["backward_targets"],
        )

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"lm": self._loss(model, batch)[0]}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        return {"lm": count_bilm_targets(batch)}

    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        loss, n = self._loss(model, batch)
        return {"lm_loss_sum": float(loss), "lm_count": n}


def count_bilm_targets(batch: dict[str, Tensor]) -> int:
    return int(
        batch["forward_targets"].ne(IGNORE).sum() + batch["backward_targets"].ne(IGNORE).sum()
    )
