"""Sentence (pair) classification and regression over any encoder; Hugging Face task models.

Devlin et al. 2019 (https://arxiv.org/abs/1810.04805) section 4.1: "the only new parameters
introduced during fine-tuning are classification layer weights W in R^{K x H}" on the pooled
first-token vector C, with loss log(softmax(C W^T)). As transformers' BertForSequenceClassification:
pooler (dense + tanh on [CLS]) -> dropout -> linear. num_labels == 1 is regression (STS-B) with a
squared-error loss, as transformers' problem_type "regression".

Pooling: "pooler" (the encoder's pretrained pooler), "cls" (the first token's raw state), "mean"
(the mean over real tokens), "electra": transformers' ElectraClassificationHead, the first token
-> dropout -> dense H -> H -> GELU (whatever the encoder's hidden_act) -> dropout -> linear, a
dense of the head's own (state-dict `dense.*`), or "xlnet": XLNet's <cls> is the LAST token
(Yang et al. 2019 section 3.1; transformers' XLNetForSequenceClassification: SequenceSummary
"last" -> dense H -> H -> tanh -> dropout -> logits_proj), read at each row's last real token, so
left padding (XLNet's tokenizer) and right padding (collate_features) give the same logits.
ELECTRA pretraining never trains a pooler, so google-research/electra fine-tunes on the raw first
token (modeling.py, get_pooled_output is sequence_output[:, 0]; classification_tasks.py,
ClassificationTask.get_prediction_module: dropout 0.1 then one dense): that is pooling="cls".
Except with "pooler" the encoder's pooler is unused and frozen, so every trainable parameter
gets a gradient (DistributedDataParallel requires it).

Any encoder of the protocol fits: `encoder(input_ids, attention_mask, token_type_ids) -> (B, T, H)`
plus `hidden_size` (and `pooled(hidden) -> (B, H)` for pooling="pooler").

The Hugging Face conversion at the end serves all three task heads (classification.py,
span_qa.py, tagging.py): the encoder rows come from models/hf.py's key table, each head adds its
own rows. State-dict names: `encoder.*` and `classifier.*` (span_qa: `qa_outputs.*`).

Shapes:
    B  batch size      T  sequence length      H  hidden size      K  labels (1: regression)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.errors import ConfigError, InputError
from muppets.models.bert import BertConfig
from muppets.models.hf import key_table
from muppets.models.hf_albert import key_table as albert_key_table
from muppets.models.hf_electra import key_table as electra_key_table
from muppets.models.hf_xlnet import key_table as xlnet_key_table
from muppets.models.layers import initialize
from muppets.tasks.objectives import IGNORE

POOLINGS = ("pooler", "cls", "mean", "electra", "xlnet")


def freeze_unused_pooler(encoder: nn.Module) -> None:
    """A head that does not read the pooler freezes it: kept (checkpoints carry it), untrained."""
    if hasattr(encoder, "pooler"):
        encoder.pooler.requires_grad_(False)


class SequenceClassifier(nn.Module):
    """encoder -> pooled (B, H) -> dropout -> linear -> (B, K) logits (K = 1: regression)."""

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        dropout: float = 0.1,
        pooling: str = "pooler",
        initializer_range: float = 0.02,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r}: must be one of {', '.join(POOLINGS)}")
        if pooling == "pooler" and not hasattr(encoder, "pooled"):
            raise ConfigError(f"pooling='pooler': {type(encoder).__name__} has no pooler")
        if num_labels < 1:
            raise ConfigError(f"num_labels={num_labels}: must be >= 1 (1 for regression)")
        self.encoder = encoder
        self.pooling = pooling
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        H = encoder.hidden_size
        if pooling in ("electra", "xlnet"):
            self.dense = nn.Linear(H, H)
            initialize(self.dense, initializer_range)
        self.classifier = nn.Linear(H, num_labels)
        initialize(self.classifier, initializer_range)
        if pooling != "pooler":
            freeze_unused_pooler(encoder)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        if self.pooling == "pooler":
            pooled = self.encoder.pooled(hidden)  # (B, H)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]  # (B, H)
        elif self.pooling == "electra":  # ElectraClassificationHead: gelu, two dropouts
            pooled = F.gelu(self.dense(self.dropout(hidden[:, 0])))  # (B, H)
        elif self.pooling == "xlnet":  # SequenceSummary "last": tanh(dense(<cls>)), no dropout
            if attention_mask is None:
                refuse_right_padding(input_ids, getattr(self.encoder.config, "pad_token_id", None))
            pooled = torch.tanh(self.dense(last_real_token(hidden, attention_mask)))  # (B, H)
        else:
            keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            keep = keep.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, H)
        return self.classifier(self.dropout(pooled))  # (B, K)


def last_real_token(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, T, H) -> (B, H) at each row's last position with attention_mask 1 (the last one
    without a mask): XLNet's <cls>, whichever side the row is padded on."""
    if attention_mask is None:
        return hidden[:, -1]
    T = attention_mask.shape[1]
    last = T - 1 - attention_mask.flip(1).argmax(1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def refuse_right_padding(input_ids: Tensor, pad_id: int | None) -> None:
    """Without an attention mask the last position is read as <cls>: a row that ends in padding
    (a batch padded on the right by someone else) would be classified from a pad token."""
    if pad_id is not None and bool((input_ids[:, -1] == pad_id).any()):
        raise InputError(
            "XLNet reads its <cls> at the last position, but this batch ends in padding (padded "
            "on the right) and has no attention_mask: pad on the left or pass attention_mask"
        )


def class_predictions(logits: Tensor) -> Tensor:
    """(B, K) logits -> (B,) label ids, or (B,) scores for regression (K = 1)."""
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)


@dataclass(frozen=True)
class ClassificationObjective:
    """Loss sums and counts (objectives.py's contract) for a SequenceClassifier.

    Batch: input_ids, attention_mask, token_type_ids (B, T) and labels (B,): label ids (-100 for
    an example without a label) or, with regression=True, float scores. Component "classification"
    (cross-entropy) or "regression" (squared error): the loop's sum / count is the mean loss of
    transformers' BertForSequenceClassification.
    """

    regression: bool = False

    @property
    def name(self) -> str:
        return "regression" if self.regression else "classification"

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        # The model is called, never taken apart, so DistributedDataParallel's hooks run.
        logits = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        logits, labels = logits.float(), batch["labels"]  # the loss in fp32 even under autocast
        if self.regression != (logits.shape[-1] == 1):
            raise ConfigError(
                f"objective {self.name!r} does not fit a model with {logits.shape[-1]} outputs"
            )
        if self.regression:
            return logits.squeeze(-1), labels.float()  # (B,), (B,)
        kept = labels.ne(IGNORE)
        return logits[kept], labels[kept]  # (B', K), (B',)

    def _loss_sum(self, outputs: Tensor, labels: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(outputs, labels, reduction="sum")
        return F.cross_entropy(outputs, labels, reduction="sum")

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {self.name: self._loss_sum(*self._forward(model, batch))}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        labels = batch["labels"]
        return {self.name: labels.numel() if self.regression else int(labels.ne(IGNORE).sum())}

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        outputs, labels = self._forward(model, batch)
        result = {
            f"{self.name}_loss_sum": float(self._loss_sum(outputs, labels)),
            f"{self.name}_count": float(labels.numel()),
        }
        if not self.regression:
            result[f"{self.name}_correct"] = float(outputs.argmax(-1).eq(labels).sum())
        return result


# ---------------------------------------------------------------- Hugging Face task models

# Rows (our key, HF key); "{wb}" = weight and bias. The encoder's pooler is part of the head: only
# BertForSequenceClassification keeps BERT's pooler; RoBERTa's classification head is
# dense + tanh + out_proj on <s>, i.e. our pooler + classifier (it adds a dropout before the
# dense, so fine-tuning a converted RoBERTa here differs only in where dropout falls).
HF_CLASSIFIER_KEYS = {
    "bert": [
        ("encoder.pooler.dense.{wb}", "bert.pooler.dense.{wb}"),
        ("classifier.{wb}", "classifier.{wb}"),
    ],
    "roberta": [
        ("encoder.pooler.dense.{wb}", "classifier.dense.{wb}"),
        ("classifier.{wb}", "classifier.out_proj.{wb}"),
    ],
    "albert": [
        ("encoder.pooler.dense.{wb}", "albert.pooler.{wb}"),
        ("classifier.{wb}", "classifier.{wb}"),
    ],
    # ElectraClassificationHead (pooling="electra"): no pooler, the head's own dense
    "electra": [
        ("dense.{wb}", "classifier.dense.{wb}"),
        ("classifier.{wb}", "classifier.out_proj.{wb}"),
    ],
    # XLNetForSequenceClassification (pooling="xlnet"): SequenceSummary's dense, logits_proj
    "xlnet": [
        ("dense.{wb}", "sequence_summary.summary.{wb}"),
        ("classifier.{wb}", "logits_proj.{wb}"),
    ],
}


def _task_table(
    config: BertConfig, head_keys: dict[str, list[tuple[str, str]]]
) -> list[tuple[str, tuple[str, ...]]]:
    """The encoder rows of hf.key_table (its pooler left to the head) + the head's rows. ELECTRA:
    the discriminator's rows of hf_electra.key_table, under `encoder.` (it has no HF pooler)."""
    if config.model_type == "electra":
        tower = "discriminator."
        rows = electra_key_table(config, "discriminator")
        table = [("encoder." + k[len(tower) :], v) for k, v in rows if k.startswith(tower)]
    elif config.model_type == "albert":  # shared layers: hf_albert's rows, pooler left out
        table = albert_key_table(config, False, with_mlm_head=False, with_pooler=False)
    elif config.model_type == "xlnet":  # its encoder's rows under `encoder.`, as hf_xlnet's
        table = [(ours, (theirs,)) for ours, theirs in xlnet_key_table(config, False)]
    else:
        table = [
            row
            for row in key_table(config, with_pair_head=False)
            if row[0].startswith("encoder.") and not row[0].startswith("encoder.pooler.")
        ]
    for ours, theirs in head_keys[config.model_type]:
        table += [(ours.format(wb=wb), (theirs.format(wb=wb),)) for wb in ("weight", "bias")]
    return table


def _check(have: set[str], want: set[str], path: object, what: str) -> None:
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        raise InputError(
            f"{what} do not match the config: missing {missing[:4]}, unexpected {unexpected[:4]}",
            path,
        )


def task_state_dict_from_hf(
    state_dict: dict[str, Tensor],
    config: BertConfig,
    head_keys: dict[str, list[tuple[str, str]]],
    path: object = None,
) -> dict[str, Tensor]:
    """A transformers task model's state dict -> ours (load it with strict=False where the HF
    class has no pooler: QA and token classification; our frozen pooler then keeps its init)."""
    sd = {
        k: v for k, v in state_dict.items() if not k.endswith((".position_ids", ".token_type_ids"))
    }
    table = _task_table(config, head_keys)
    _check(set(sd), {name for _, theirs in table for name in theirs}, path, "checkpoint keys")
    return {
        ours: torch.cat([sd[n] for n in theirs]) if len(theirs) > 1 else sd[theirs[0]]
        for ours, theirs in table
    }


def task_state_dict_to_hf(
    state_dict: dict[str, Tensor], config: BertConfig, head_keys: dict[str, list[tuple[str, str]]]
) -> dict[str, Tensor]:
    """Ours -> the transformers task model's (an unused pooler is left out, as HF has none)."""
    table = _task_table(config, head_keys)
    have = {k for k in state_dict if not k.startswith("encoder.pooler.")}
    _check(
        have,
        {ours for ours, _ in table if not ours.startswith("encoder.pooler.")},
        None,
        "muppets state dict keys",
    )
    out = {}
    for ours, theirs in table:
        parts = state_dict[ours].chunk(len(theirs))  # the fused QKV splits into query, key, value
        out.update({name: part.clone() for name, part in zip(theirs, parts, strict=True)})
    return out


def classifier_state_dict_from_hf(
    state_dict: dict[str, Tensor], config: BertConfig, path: object = None
) -> dict[str, Tensor]:
    """BertForSequenceClassification / RobertaForSequenceClassification -> SequenceClassifier
    (pooling="pooler")."""
    return task_state_dict_from_hf(state_dict, config, HF_CLASSIFIER_KEYS, path)
