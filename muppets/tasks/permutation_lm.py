"""XLNet's permutation language modelling loss, with memories carried between steps.

Yang et al. 2019 section 2.3 (partial prediction: only the targets of target_mapping are
predicted, by the query stream) and 2.4 (the reuse part's hidden states are the next segment's
memory). The loss is zihangdai/xlnet's (function.py / modeling.py lm_loss: cross-entropy at the
target_mapping rows, weighted by target_mask), i.e. transformers' XLNetLMHeadModel loss with the
labels given at the target_mapping rows (-100 where target_mask is 0), as a SUM here: the loop
divides by the number of targets of the whole accumulated batch (objectives.py's contract).

Memories ride on causal_lm.py's mechanism, unchanged: `SegmentMemory` keyed by (train|eval,
chunk), `RowChunks` cutting each batch's rows into micro-batches and saving the memories with the
data position, so a resumed run is bitwise the uninterrupted one. A pass's first step
(`new_stream`) starts without memory (the reference's mems start at zeros).

Shapes: B rows, L seq_len, P predicted positions, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muppets.data.permutation import IGNORE_INDEX
from muppets.models.xlnet import XLNetLMHeadModel
from muppets.tasks.causal_lm import SegmentMemory

# What the model reads from a batch of data/xlnet_instances.py (the rest is for checks).
INPUTS = ("input_ids", "token_type_ids", "attention_mask", "perm_mask", "target_mapping")


class XLNetPLMLoss(nn.Module):
    """XLNetLMHeadModel with (summed NLL, targets, correct) as its forward, its memories kept in
    `memory`. The model's sub-modules are registered under their own names, so the state dict is
    the model's (a checkpoint loads into XLNetLMHeadModel, as TransfoXLLoss does)."""

    def __init__(self, model: XLNetLMHeadModel, memory: SegmentMemory | None = None):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.__dict__["lm"] = model  # not registered: its parameters are the ones above
        self.__dict__["memory"] = memory if memory is not None else SegmentMemory()

    def forward(
        self,
        input_ids: Tensor,  # (B, L)
        token_type_ids: Tensor,  # (B, L)
        attention_mask: Tensor,  # (B, L)
        perm_mask: Tensor,  # (B, L, L)
        target_mapping: Tensor,  # (B, P, L)
        labels: Tensor,  # (B, P)
        new_stream: Tensor,
        chunk: Tensor,
        count_correct: bool = True,
    ) -> tuple[Tensor, int, int]:
        """(summed NLL, targets, correct); count_correct False (training): correct is 0 (no argmax
        over the vocabulary, no copies of the logits at the kept rows)."""
        key = ("train" if self.training else "eval", int(chunk))
        if bool(new_stream):
            self.memory.reset(key)
        mems = self.memory.get(key, input_ids.device)
        out = self.lm.encoder.run(
            input_ids,
            attention_mask,
            token_type_ids,
            mems=mems,
            perm_mask=perm_mask,
            target_mapping=target_mapping,
            use_mems=True,
            tied_head=not count_correct,  # training: the head below gives the dense gradient
        )
        self.memory.put(key, out.mems)
        kept = labels.ne(IGNORE_INDEX)  # (B, P): target_mask
        if not count_correct:
            return target_nll_sum(self.lm, out.hidden, labels), int(kept.sum()), 0
        logits = self.lm.mlm_head(out.hidden, self.lm.encoder.word_embeddings.weight)
        logits = logits.float()  # (B, P, V), the loss in fp32 even under autocast
        loss = F.cross_entropy(logits[kept], labels[kept], reduction="sum")
        correct = int((logits[kept].argmax(-1) == labels[kept]).sum())
        return loss, int(kept.sum()), correct


def target_nll_sum(model: XLNetLMHeadModel, hidden: Tensor, labels: Tensor) -> Tensor:
    """Summed NLL of labels (B, P) (IGNORE_INDEX: not a target) from the query stream's hidden
    (B, P, H) through the tied head, at the kept targets only: XLNet predicts num_predict
    positions, and the vocabulary projection never runs elsewhere. A plain log-softmax, not
    lm_softmax's blocked one: with a few hundred targets against a 32k x H embedding, the blocked
    path's passes over the (V, H) gradient cost more than the (targets, V) passes it saves."""
    kept = labels.ne(IGNORE_INDEX)  # (B, P)
    weight = model.encoder.word_embeddings.weight  # (V, H), tied
    logits = F.linear(hidden[kept], weight, model.mlm_head.bias).float()  # (targets, V)
    return F.cross_entropy(logits, labels[kept], reduction="sum")


class PermutationLMObjective:
    """One component, "plm": the targets' NLL summed over the micro-batch."""

    def _forward(
        self, model: nn.Module, batch: dict[str, Tensor], count_correct: bool
    ) -> tuple[Tensor, int, int]:
        chunk = batch.get("chunk", torch.tensor(0))
        inputs = [batch[name] for name in INPUTS]
        return model(*inputs, batch["labels"], batch["new_stream"], chunk, count_correct)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"plm": self._forward(model, batch, count_correct=False)[0]}

    def count_targets(self, batch: dict[str, Tensor]) -> dict[str, int]:
        return {"plm": int(batch["labels"].ne(IGNORE_INDEX).sum())}

    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        loss, n, correct = self._forward(model, batch, count_correct=True)
        return {"plm_loss_sum": float(loss), "plm_correct": correct, "plm_count": n}
