"""Extractive question answering: start and end logits per token over any encoder.

Devlin et al. 2019 (https://arxiv.org/abs/1810.04805) section 4.2: a start vector S and an end
vector E; P(start = i) = softmax_i(S . T_i) over the paragraph, the same for the end, and the
training objective is the sum of the log-likelihoods of the correct start and end. As
transformers' BertForQuestionAnswering: one linear layer `qa_outputs` (H -> 2, no dropout), and
its loss is the mean of the start and end cross-entropies.

Unlike transformers, padding positions get the dtype's lowest value, so a padded batch gives the
same softmax (and loss) as each sequence alone. The best span is found by span_decoding.py
(exact search over all windows, back to characters); this file only scores tokens.

Shapes:
    B  batch size      T  sequence length      H  hidden size
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.models.bert import BertConfig
from muppets.models.layers import initialize
from muppets.tasks.classification import freeze_unused_pooler, task_state_dict_from_hf
from muppets.tasks.objectives import IGNORE


class SpanLogits(NamedTuple):
    start: Tensor  # (B, T); padding positions hold finfo(dtype).min
    end: Tensor  # (B, T)


class SpanQAHead(nn.Module):
    """encoder -> (B, T, H) -> linear -> start and end logits. The encoder's pooler is frozen."""

    def __init__(self, encoder: nn.Module, initializer_range: float = 0.02):
        super().__init__()
        self.encoder = encoder
        self.qa_outputs = nn.Linear(encoder.hidden_size, 2)  # [start, end], as transformers
        initialize(self.qa_outputs, initializer_range)
        freeze_unused_pooler(encoder)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> SpanLogits:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        logits = self.qa_outputs(hidden)  # (B, T, 2)
        if attention_mask is not None:
            padding = attention_mask.eq(0).unsqueeze(-1)  # (B, T, 1)
            logits = logits.masked_fill(padding, torch.finfo(logits.dtype).min)
        start, end = logits.unbind(-1)  # 2 x (B, T)
        return SpanLogits(start, end)


class SpanQAObjective:
    """Loss sums and counts (objectives.py's contract) for a SpanQAHead.

    Batch: input_ids, attention_mask, token_type_ids (B, T); start_positions and end_positions
    (B,) token indices (0, the [CLS] position, for a window without the answer or an unanswerable
    question, as run_squad.py), -100 in both for a window left out of the loss. Component "span"
    sums (CE(start) + CE(end)) / 2 per window: the loop's sum / count is transformers' loss.
    """

    name = "span"

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]):
        # The model is called, never taken apart, so DistributedDataParallel's hooks run.
        out = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        starts, ends = batch["start_positions"], batch["end_positions"]
        return out.start.float(), out.end.float(), starts, ends  # fp32 loss under autocast

    @staticmethod
    def _loss_sum(start: Tensor, end: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
        loss = F.cross_entropy(start, starts, reduction="sum", ignore_index=IGNORE)
        return 0.5 * (loss + F.cross_entropy(end, ends, reduction="sum", ignore_index=IGNORE))

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {self.name: self._loss_sum(*self._forward(model, batch))}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        return {self.name: int(batch["start_positions"].ne(IGNORE).sum())}

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """Loss, and "correct" = both argmax positions right (token level, not SQuAD EM: that
        needs span_decoding and the contexts)."""
        start, end, starts, ends = self._forward(model, batch)
        kept = starts.ne(IGNORE)
        right = start.argmax(-1).eq(starts) & end.argmax(-1).eq(ends) & kept
        return {
            f"{self.name}_loss_sum": float(self._loss_sum(start, end, starts, ends)),
            f"{self.name}_correct": float(right.sum()),
            f"{self.name}_count": float(kept.sum()),
        }


# transformers' Bert/Roberta/ElectraForQuestionAnswering: no pooler, qa_outputs.
HF_SPAN_QA_KEYS = {
    "bert": [("qa_outputs.{wb}", "qa_outputs.{wb}")],
    "roberta": [("qa_outputs.{wb}", "qa_outputs.{wb}")],
    "electra": [("qa_outputs.{wb}", "qa_outputs.{wb}")],
    "albert": [("qa_outputs.{wb}", "qa_outputs.{wb}")],
    "xlnet": [("qa_outputs.{wb}", "qa_outputs.{wb}")],  # XLNetForQuestionAnsweringSimple
}


def span_qa_state_dict_from_hf(
    state_dict: dict[str, Tensor], config: BertConfig, path: object = None
) -> dict[str, Tensor]:
    """BertForQuestionAnswering / RobertaForQuestionAnswering -> SpanQAHead; no pooler keys
    (load with strict=False: the frozen pooler keeps its initial values)."""
    return task_state_dict_from_hf(state_dict, config, HF_SPAN_QA_KEYS, path)
