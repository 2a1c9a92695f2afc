"""Token tagging (NER, POS, chunking): a label per token over any encoder.

Devlin et al. 2019 (https://arxiv.org/abs/1810.04805) section 5.3: the final hidden state of each
token feeds a classification layer over the tag set, with no CRF; a word is tagged from its first
sub-token (labels -100 elsewhere: tag_decoding.align_first_subword, words_from_subwords). As
transformers' BertForTokenClassification: dropout -> linear `classifier` (H -> K).

Shapes:
    B  batch size      T  sequence length      H  hidden size      K  labels
    M  labelled tokens in the batch (labels != -100)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError
from muppets.models.bert import BertConfig
from muppets.models.layers import initialize
from muppets.tasks.classification import freeze_unused_pooler, task_state_dict_from_hf
from muppets.tasks.objectives import IGNORE


class TokenTagger(nn.Module):
    """encoder -> (B, T, H) -> dropout -> linear -> (B, T, K). The encoder's pooler is frozen."""

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
    ):
        super().__init__()
        if num_labels < 1:
            raise ConfigError(f"num_labels={num_labels}: must be >= 1")
        self.encoder = encoder
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.hidden_size, num_labels)
        initialize(self.classifier, initializer_range)
        freeze_unused_pooler(encoder)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        return self.classifier(self.dropout(hidden))  # (B, T, K)


class TaggingObjective:
    """Loss sums and counts (objectives.py's contract) for a TokenTagger.

    Batch: input_ids, attention_mask, token_type_ids (B, T) and labels (B, T), -100 wherever
    nothing is predicted (padding, specials, later sub-tokens). Component "tagging": the summed
    token cross-entropy; the loop's sum / count is transformers' mean loss.
    """

    name = "tagging"

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        # The model is called, never taken apart, so DistributedDataParallel's hooks run.
        logits = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        labels = batch["labels"]
        kept = labels.ne(IGNORE)  # (B, T)
        return logits[kept].float(), labels[kept]  # (M, K), (M,); the loss in fp32

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, labels = self._forward(model, batch)
        return {self.name: F.cross_entropy(logits, labels, reduction="sum")}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        return {self.name: int(batch["labels"].ne(IGNORE).sum())}

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """Loss and token accuracy over labelled tokens (entity F1 needs the words: metrics.py)."""
        logits, labels = self._forward(model, batch)
        return {
            f"{self.name}_loss_sum": float(F.cross_entropy(logits, labels, reduction="sum")),
            f"{self.name}_correct": float(logits.argmax(-1).eq(labels).sum()),
            f"{self.name}_count": float(labels.numel()),
        }


# transformers' Bert/Roberta/ElectraForTokenClassification: no pooler, classifier.
HF_TAGGER_KEYS = {
    "bert": [("classifier.{wb}", "classifier.{wb}")],
    "roberta": [("classifier.{wb}", "classifier.{wb}")],
    "electra": [("classifier.{wb}", "classifier.{wb}")],
    "albert": [("classifier.{wb}", "classifier.{wb}")],
    "xlnet": [("classifier.{wb}", "classifier.{wb}")],
}


def tagger_state_dict_from_hf(
    state_dict: dict[str, Tensor], config: BertConfig, path: object = None
) -> dict[str, Tensor]:
    """BertForTokenClassification / RobertaForTokenClassification -> TokenTagger; no pooler keys
    (load with strict=False: the frozen pooler keeps its initial values)."""
    return task_state_dict_from_hf(state_dict, config, HF_TAGGER_KEYS, path)
