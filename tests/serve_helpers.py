"""What the serve tests share: tiny random models saved as the directories `muppets serve` loads
(no training: predictions of random weights are as exact as trained ones), a real uvicorn server
on a free loopback port in a thread, and a plain http.client caller."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from pathlib import Path

import torch
import uvicorn

from muppets.data.readers.squad import QAExample
from muppets.data.readers.tabular import Example
from muppets.data.task_features import collate_features
from muppets.models.registry import build_encoder, build_pretraining_model, preset_config
from muppets.serve.app import Limits, build_app
from muppets.serve.loading import load_served
from muppets.tasks.prediction import predict
from muppets.tasks.registry import CONLL2003_TAGS, build_head
from muppets.tasks.setup import TaskSetup, save_task
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_finetuned

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def tiny_config(tokenizer, **extra):
    vocabulary = {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_id}
    return preset_config("bert-tiny", **vocabulary, **SIZES, intermediate_size=64, **extra)


def save_finetuned(directory: Path, tokenizer, setup: TaskSetup, scale: float = 1.0) -> Path:
    """A random encoder + head saved as `muppets finetune` saves a model; the head's weights
    scaled so that random outputs spread over several labels."""
    torch.manual_seed(0)
    config = tiny_config(tokenizer)
    labels = len(setup.labels) if setup.head != "regression" else 1
    model = build_head(setup.spec, build_encoder(config), labels, pooling=setup.pooling).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("encoder."):
                parameter.mul_(scale)
    save_pretrained(directory, model, config.to_dict())
    tokenizer.save(directory)
    save_task(directory, setup)
    return directory


def save_classifier(directory: Path, tokenizer, texts: list[str]) -> Path:
    """A random SST-2 classifier whose label-1 bias is moved to the median logit margin over
    `texts`, so that about half of them get each label."""
    setup = TaskSetup("sst2", "classification", ["0", "1"], 12, pooling="cls")
    save_finetuned(directory, tokenizer, setup, scale=30.0)
    model, _, _ = load_finetuned(directory)
    examples = [Example(t, None, None, f"t-{n}", "texts", n) for n, t in enumerate(texts)]
    batch = collate_features(setup.featurize(examples, tokenizer, False), tokenizer.pad_id)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        margin = (logits[:, 1] - logits[:, 0]).median()
        model.classifier.bias[1] -= margin + 1e-3  # no text sits on the boundary
    save_pretrained(directory, model, tiny_config(tokenizer).to_dict())  # a fresh directory
    tokenizer.save(directory)
    save_task(directory, setup)
    return directory


def save_tagger(directory: Path, tokenizer) -> Path:
    setup = TaskSetup("conll2003", "tagging", list(CONLL2003_TAGS), 8)
    return save_finetuned(directory, tokenizer, setup, scale=30.0)


def save_qa(directory: Path, tokenizer, questions: list[str], context: str) -> Path:
    """A random SQuAD v2.0 model (doc_stride 6: several windows) whose null threshold is the
    median of its null odds over `questions`, so that about half of them get no answer."""
    setup = TaskSetup("squad", "span_qa", [], 24, squad_v2=True, doc_stride=6, max_query_length=8)
    save_finetuned(directory, tokenizer, setup, scale=300.0)
    model, _, _ = load_finetuned(directory)
    examples = [
        QAExample(f"q{n}", q, context, [], [], True, "questions", n)
        for n, q in enumerate(questions)
    ]
    features = setup.featurize(examples, tokenizer, False)
    _, notes = predict(model, setup, examples, features, tokenizer.pad_id)
    odds = sorted(notes["null_odds"].values())
    setup.null_threshold = (odds[len(odds) // 2 - 1] + odds[len(odds) // 2]) / 2
    save_task(directory, setup)
    return directory


def save_pretrained_bert(directory: Path, tokenizer) -> Path:
    torch.manual_seed(0)
    config = tiny_config(tokenizer)
    save_pretrained(directory, build_pretraining_model(config), config.to_dict())
    tokenizer.save(directory)
    return directory


def served_app(model: Path, limits: Limits | None = None):
    served = load_served(model, torch.device("cpu"), 512, 64)
    return build_app(served, limits or Limits())


@contextlib.contextmanager
def running(app):
    """The app on a free loopback port (uvicorn in a thread); yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def call(port: int, method: str, path: str, body=None, headers: dict | None = None):
    """(status, headers, parsed JSON or text) of one request; `body` is bytes, or JSON-encoded."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    kind = response.getheader("content-type", "")
    parsed = json.loads(raw) if kind.startswith("application/json") else raw.decode()
    return response.status, dict(response.getheaders()), parsed
