"""A model directory -> the routes it can serve, each a `prepare` (per request, before the queue)
and a `run` (per batch of requests, in the worker thread; /qa splits it into the model's
`forward` in the worker and the decoding's `finish` on the event loop).

    fine-tuned encoder + head (task.json, or a transformers task model):
        classify (classification, regression) | tag (tagging) | qa (span_qa); and embed
    --downstream model over frozen features: classify | tag
    pretrained BERT family: embed, and fill-mask when it has an MLM head
    ELMo biLM: embed

`prepare` tokenizes and featurizes with the task setup's own featurizers (what `muppets predict`
uses), so a request's cost in tokens is known before it queues and a bad text is refused before
it costs anything. `run` pads length-sorted sub-batches of at most `max_tokens` padded tokens;
decoding is tasks/prediction.py's (decode_tags; example_span's rule for a whole batch at once,
serve/qa_spans.py), so the answers are predict's.

Shapes:
    B  inputs in a sub-batch    T  longest feature in it    K  labels    L  encoder layers
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from muppets.data.readers.conll import Sentence
from muppets.data.readers.squad import QAExample
from muppets.data.readers.tabular import Example
from muppets.data.task_features import collate_features
from muppets.errors import InputError
from muppets.serve.qa_spans import batch_spans
from muppets.tasks.classification import class_predictions
from muppets.tasks.prediction import NONFINITE, decode_tags, unanswered
from muppets.tasks.setup import TaskSetup
from muppets.tasks.tag_decoding import entity_spans


class RequestError(Exception):
    """A request the server refuses: HTTP status, the field at fault, what is wrong."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@dataclass
class Work:
    """One request's share of a batch: its route, its cost and what `run` needs."""

    route: str
    tokens: int  # what it adds to a batch's token budget
    data: dict = field(default_factory=dict)


@dataclass
class Route:
    prepare: Callable[[object, bool], Work]  # (validated request, truncate) -> Work
    run: Callable[[list[Work]], list[dict]]  # works of one batch -> one response body each
    # run in two steps, run(works) = finish(works, forward(works)): the batch worker runs only
    # `forward` (the model) and the event loop `finish` (decoding) while the next batch runs
    forward: Callable[[list[Work]], object] | None = None
    finish: Callable[[list[Work], object], list[dict]] | None = None


def sub_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, longest first, cut where B x T would pass max_tokens (a longer
    feature than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# Padded tokens in one forward pass on a CPU, whatever the batch budget: a bert-tiny QA batch of
# 8,192 tokens costs 6.75 ms of CPU a question against 5.7-5.8 at 1,536-2,048 (its activations
# leave the cache; bench/RESULTS.md "Serving under load"). A GPU takes the whole budget at once.
CPU_FORWARD_TOKENS = 2048


def forward_features(
    model: nn.Module, head: str, features: list, pad_id: int, max_tokens: int
) -> list:
    """Per feature, what tasks/prediction.py's `predict` keeps: (T, 2) start/end scores (QA),
    (T,) tag ids (tagging), or (K,) logits (classification; regression K = 1). model: the
    PyTorch task model, or an exported graph (serve/onnx_model.py: `scores(arrays)`)."""
    exported = not isinstance(model, nn.Module)
    device = model.device if exported else next(model.parameters()).device
    if device.type == "cpu":
        max_tokens = min(max_tokens, model.forward_tokens if exported else CPU_FORWARD_TOKENS)
    outputs: list = [None] * len(features)
    for indices in sub_batches([len(f) for f in features], max_tokens):
        batch = collate_features([features[i] for i in indices], pad_id)
        if exported:  # numpy end to end: no torch call between ONNX Runtime's passes (each
            # one drops and retakes the GIL, which the event loop's thread wants too)
            logits = model.scores({k: v.numpy() for k, v in batch.items()})
        else:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            logits = torch.stack([out.start, out.end], -1) if head == "span_qa" else out
            logits = logits.float().cpu().numpy()  # (B, T, 2), (B, T, K) or (B, K)
        if not np.isfinite(logits).all():
            raise InputError(f"the model gives {NONFINITE}")
        rows = logits.argmax(-1) if head == "tagging" else logits
        for i, row in zip(indices, rows, strict=True):
            outputs[i] = row[: len(features[i])] if head in ("span_qa", "tagging") else row
    return outputs


def words_of(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace-separated words and their [start, end) characters."""
    found = [(m.group(), m.span()) for m in re.finditer(r"\S+", text)]
    return [w for w, _ in found], [s for _, s in found]


def check_length(n_tokens: int, limit: int, field_name: str, truncate: bool) -> bool:
    """Whether a text of n_tokens is truncated; 413 when it does not fit and truncate is off."""
    if n_tokens <= limit:
        return False
    if not truncate:
        raise RequestError(
            413,
            field_name,
            f"{n_tokens} tokens, more than the model's {limit}; send ?truncate=true to cut it",
        )
    return True


class TaskRoutes:
    """classify / tag / qa of a fine-tuned encoder + head, and its probabilities."""

    def __init__(self, model: nn.Module, setup: TaskSetup, tokenizer, max_tokens: int):
        self.model, self.setup, self.tokenizer = model, setup, tokenizer
        self.max_tokens = max_tokens  # padded tokens in one forward pass

    def routes(self) -> dict[str, Route]:
        head = self.setup.head
        if head in ("classification", "regression"):
            return {"classify": Route(self.prepare_classify, self.run_classify)}
        if head == "tagging":
            return {"tag": Route(self.prepare_tag, self.run_tag)}
        return {"qa": Route(self.prepare_qa, self.run_qa, self.forward_qa, self.finish_qa)}

    def _features(self, examples: list) -> list:
        return self.setup.featurize(examples, self.tokenizer, labelled=False)

    def prepare_classify(self, request, truncate: bool) -> Work:
        pairs = request.text_pairs or [None] * len(request.inputs)
        examples = [
            Example(a, b, None, f"request-{n}", "request", n + 1)
            for n, (a, b) in enumerate(zip(request.inputs, pairs, strict=True))
        ]
        limit, truncated = self.setup.max_seq_length, []
        for n, (a, b) in enumerate(zip(request.inputs, pairs, strict=True)):
            n_tokens = len(self.tokenizer.encode_pair(a, b)[0])  # with [CLS] and [SEP]s
            truncated.append(check_length(n_tokens, limit, f"inputs.{n}", truncate))
        features = self._features(examples)
        return Work("classify", sum(map(len, features)), {"features": features, "cut": truncated})

    def run_classify(self, works: list[Work]) -> list[dict]:
        features = [f for w in works for f in w.data["features"]]
        logits = forward_features(
            self.model, self.setup.head, features, self.tokenizer.pad_id, self.max_tokens
        )
        logits = torch.from_numpy(np.stack(logits))  # (N, K)
        labels = class_predictions(logits)  # predict's own rule (argmax, or the score)
        probabilities = logits.softmax(-1)
        bodies, k = [], 0
        for work in works:
            results = []
            for cut in work.data["cut"]:
                if self.setup.head == "regression":
                    result = {"score": float(labels[k])}
                else:
                    shown = zip(self.setup.labels, probabilities[k].tolist(), strict=True)
                    result = {
                        "label": self.setup.labels[int(labels[k])],
                        "probabilities": dict(shown),
                    }
                results.append({**result, "truncated": cut})
                k += 1
            bodies.append({"results": results})
        return bodies

    def prepare_tag(self, request, truncate: bool) -> Work:
        # A long sentence is split at word boundaries into several features (no word is lost)
        sentences, spans = [], []
        for n, text in enumerate(request.inputs):
            words, where = words_of(text)
            sentences.append(Sentence(words, ["O"] * len(words), "request", n + 1))
            spans.append(where)
        features = self._features(sentences)
        data = {"sentences": sentences, "spans": spans, "features": features}
        return Work("tag", sum(map(len, features)), data)

    def _forward_works(self, works: list[Work], kind: str) -> list:
        """The features of every work in one batch (forward_features); each work's outputs."""
        features = [f for w in works for f in w.data["features"]]
        outputs = forward_features(
            self.model, kind, features, self.tokenizer.pad_id, self.max_tokens
        )
        per_work, k = [], 0
        for work in works:
            per_work.append(outputs[k : k + len(work.data["features"])])
            k += len(work.data["features"])
        return per_work

    def run_tag(self, works: list[Work]) -> list[dict]:
        bodies = []
        for work, mine in zip(works, self._forward_works(works, "tagging"), strict=True):
            tags, _ = decode_tags(self.setup, work.data["sentences"], work.data["features"], mine)
            results = []
            for sentence, spans, sentence_tags in zip(
                work.data["sentences"], work.data["spans"], tags, strict=True
            ):
                entities = [
                    {"type": kind, "start": spans[first][0], "end": spans[last][1]}
                    for kind, first, last in entity_spans(sentence_tags)
                ]
                results.append(
                    {"words": sentence.words, "tags": sentence_tags, "entities": entities}
                )
            bodies.append({"results": results})
        return bodies

    def prepare_qa(self, request, truncate: bool) -> Work:
        # Long contexts are cut into doc_stride windows; only the question can be truncated
        examples, truncated = [], []
        for n, item in enumerate(request.inputs):
            examples.append(
                QAExample(f"q{n}", item.question, item.context, [], [], False, "request", n + 1)
            )
            n_tokens = len(self.tokenizer.encode(item.question))
            limit = self.setup.max_query_length
            truncated.append(check_length(n_tokens, limit, f"inputs.{n}.question", truncate))
        features = self._features(examples)
        data = {"examples": examples, "features": features, "cut": truncated}
        return Work("qa", sum(map(len, features)), data)

    def run_qa(self, works: list[Work]) -> list[dict]:
        return self.finish_qa(works, self.forward_qa(works))

    def forward_qa(self, works: list[Work]) -> list:
        """(T, 2) scores of every window of the batch's questions, in order."""
        features = [f for w in works for f in w.data["features"]]
        return forward_features(
            self.model, "span_qa", features, self.tokenizer.pad_id, self.max_tokens
        )

    def finish_qa(self, works: list[Work], outputs: list) -> list[dict]:
        # Every question of the batch decoded at once (serve/qa_spans.py: example_span's rule)
        examples = [e for w in works for e in w.data["examples"]]
        features, owners, first = [], [], 0
        for work in works:
            features += work.data["features"]
            owners += [first + f.example for f in work.data["features"]]
            first += len(work.data["examples"])
        spans = iter(batch_spans(self.setup, examples, features, outputs, owners))
        bodies = []
        for work in works:
            results = []
            for cut in work.data["cut"]:
                span = next(spans)
                none = unanswered(self.setup, span) or span.window < 0
                result = {
                    "answer": "" if none else span.text,
                    "start": None if none else span.char_start,
                    "end": None if none else span.char_end,
                    "score": span.score if np.isfinite(span.score) else None,
                    "truncated": cut,
                }
                if self.setup.squad_v2:
                    result["null_odds"] = span.null_odds
                results.append(result)
            bodies.append({"results": results})
        return bodies


class DownstreamRoutes:
    """classify / tag of a --downstream model (labels only: its predict gives no scores)."""

    def __init__(self, downstream):
        self.downstream, self.setup = downstream, downstream.setup

    def routes(self) -> dict[str, Route]:
        if self.setup.head == "tagging":
            return {"tag": Route(self.prepare_tag, self.run)}
        return {"classify": Route(self.prepare_classify, self.run)}

    def prepare_classify(self, request, truncate: bool) -> Work:
        pairs = request.text_pairs or [None] * len(request.inputs)
        examples = [
            Example(a, b, None, f"request-{n}", "request", n + 1)
            for n, (a, b) in enumerate(zip(request.inputs, pairs, strict=True))
        ]
        return Work("classify", sum(len(e.text_a.split()) for e in examples), {"ex": examples})

    def prepare_tag(self, request, truncate: bool) -> Work:
        sentences, spans = [], []
        for n, text in enumerate(request.inputs):
            words, where = words_of(text)
            sentences.append(Sentence(words, ["O"] * len(words), "request", n + 1))
            spans.append(where)
        return Work("tag", sum(len(s.words) for s in sentences), {"ex": sentences, "spans": spans})

    def run(self, works: list[Work]) -> list[dict]:
        examples = [e for w in works for e in w.data["ex"]]
        predictions = self.downstream.predict(examples, max(len(examples), 1))
        bodies, k = [], 0
        for work in works:
            results = []
            for n, _ in enumerate(work.data["ex"]):
                if self.setup.head == "tagging":
                    tags, spans = predictions[k], work.data["spans"][n]
                    entities = [
                        {"type": kind, "start": spans[a][0], "end": spans[b][1]}
                        for kind, a, b in entity_spans(tags)
                    ]
                    words = work.data["ex"][n].words
                    results.append({"words": words, "tags": tags, "entities": entities})
                elif self.setup.head == "regression":
                    results.append({"score": float(predictions[k]), "truncated": False})
                else:
                    label = self.setup.labels[int(predictions[k])]
                    results.append({"label": label, "probabilities": None, "truncated": False})
                k += 1
            bodies.append({"results": results})
        return bodies
