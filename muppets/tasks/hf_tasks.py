"""transformers' task models <-> our fine-tuned models (encoder + head + task.json).

BertForSequenceClassification / ...ForTokenClassification / ...ForQuestionAnswering and their
RoBERTa, ALBERT, ELECTRA and XLNet twins (XLNet's QA: XLNetForQuestionAnsweringSimple) are the
heads of classification.py, tagging.py and span_qa.py over our encoder; their key tables live
beside each head. ELECTRA's sequence classifier is pooling="electra" (ElectraClassificationHead:
dense + GELU on the first token, with a dense of its own, where BERT's pooler is dense + tanh),
XLNet's pooling="xlnet" (SequenceSummary: dense + tanh on the last token); the others read the
pooler (pooling="pooler"). What
task.json holds comes from config.json:

- the labels: id2label in id order; without it, num_labels (2 by default, as transformers) with
  transformers' placeholder names LABEL_0, LABEL_1, ..., read as the ids themselves ("0", "1":
  GLUE's names, so `--task sst2` fits a two-label model);
- the head: num_labels == 1 or problem_type "regression" is regression (transformers' rule);
- the task: the reader that fits any file of that head (tabular tsv/csv/jsonl, CoNLL, SQuAD);
  `--task` of evaluate and predict names another of the same head and labels;
- lengths: the task's own (128; SQuAD 384, stride 128, questions 64), cut to the model's positions;
- the SQuAD version is not written down: v2.0 on a file with unanswerable questions (as
  run_qa.py --version_2_with_negative, null threshold 0), v1.1 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from safetensors.torch import save_file
from torch import nn

from muppets.errors import ConfigError, InputError
from muppets.models.albert import AlbertConfig
from muppets.models.bert import BertConfig
from muppets.models.electra import ElectraConfig
from muppets.models.hf import (
    HfFiles,
    _read_json,
    _read_weights,
    config_to_hf,
    load_converted,
    read_hf_directory,
)
from muppets.models.hf_albert import config_from_hf as albert_config_from_hf
from muppets.models.hf_albert import config_to_hf as albert_config_to_hf
from muppets.models.hf_electra import config_from_hf as electra_config_from_hf
from muppets.models.hf_electra import config_to_hf as electra_config_to_hf
from muppets.models.hf_xlnet import config_from_hf as xlnet_config_from_hf
from muppets.models.hf_xlnet import config_to_hf as xlnet_config_to_hf
from muppets.models.registry import build_encoder
from muppets.models.xlnet import XLNetConfig
from muppets.tasks.classification import (
    HF_CLASSIFIER_KEYS,
    task_state_dict_from_hf,
    task_state_dict_to_hf,
)
from muppets.tasks.registry import build_head, task_spec
from muppets.tasks.setup import TaskSetup
from muppets.tasks.span_qa import HF_SPAN_QA_KEYS
from muppets.tasks.tagging import HF_TAGGER_KEYS

# transformers class suffix -> our head; the prefix names the family (Bert, Roberta).
SUFFIXES = {
    "ForQuestionAnsweringSimple": "span_qa",  # XLNet's start/end head (first: the reverse map)
    "ForSequenceClassification": "classification",
    "ForTokenClassification": "tagging",
    "ForQuestionAnswering": "span_qa",
}
FAMILIES = {
    "bert": "Bert",
    "roberta": "Roberta",
    "electra": "Electra",
    "albert": "Albert",
    "xlnet": "XLNet",
}
# head -> the task whose reader takes any file of that head
DEFAULT_TASKS = {
    "classification": "tabular",
    "regression": "tabular-regression",
    "tagging": "conll",
    "span_qa": "squad",
}
POOLED_HEADS = ("classification", "regression")  # the heads that read a pooled vector
KEYS = {
    "classification": HF_CLASSIFIER_KEYS,
    "regression": HF_CLASSIFIER_KEYS,
    "tagging": HF_TAGGER_KEYS,
    "span_qa": HF_SPAN_QA_KEYS,
}


def hf_task_class(values: dict[str, Any]) -> str | None:
    """The task-model class a config.json names (e.g. "BertForTokenClassification"), or None."""
    for name in values.get("architectures") or []:
        if isinstance(name, str) and name.endswith(tuple(SUFFIXES)):
            return name
    return None


def _labels(values: dict[str, Any], path: object) -> list[str]:
    """Label names in id order from id2label (keys "0", "1", ... as JSON writes them)."""
    id2label = values.get("id2label")
    if id2label:
        if not isinstance(id2label, dict):
            raise InputError("config field id2label: expected an object {id: name}", path)
        try:
            names = [str(id2label[str(i)]) for i in range(len(id2label))]
        except KeyError:
            ids = ", ".join(sorted(map(str, id2label)))
            raise InputError(f"config field id2label: ids {ids} are not 0..n-1", path) from None
    else:
        n = values.get("num_labels", 2)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f"config field num_labels={n!r}: must be a positive integer", path)
        names = [f"LABEL_{i}" for i in range(n)]
    if names == [f"LABEL_{i}" for i in range(len(names))]:
        names = [str(i) for i in range(len(names))]  # transformers' placeholders: the ids
    return names


def task_setup_from_hf(values: dict[str, Any], config: BertConfig, path: object) -> TaskSetup:
    """What task.json would hold for a transformers task model's config.json."""
    name = hf_task_class(values)
    if name is None or name[: -len(_suffix(name))] not in FAMILIES.values():
        raise InputError(f"architectures {values.get('architectures')}: not a task model", path)
    head = SUFFIXES[_suffix(name)]
    labels = [] if head == "span_qa" else _labels(values, path)
    if head == "classification" and (
        len(labels) == 1 or values.get("problem_type") == "regression"
    ):
        head, labels = "regression", []
    task = DEFAULT_TASKS[head]
    length = min(task_spec(task).max_seq_length, config.max_sequence_length)
    return TaskSetup(
        task=task,
        head=head,
        labels=labels,
        pooling=family_pooling(config.model_type) if head in POOLED_HEADS else "pooler",
        max_seq_length=length,
        doc_stride=min(128, max(1, length // 3)),
        max_query_length=min(64, max(1, length // 4)),
        squad_v2=None if head == "span_qa" else False,
    )


def family_pooling(model_type: str) -> str:
    """The pooling of a family's transformers sequence classifier: ELECTRA's own head, XLNet's
    summary of its last token, else the pooler (BertForSequenceClassification, RoBERTa's
    dense + tanh head, ALBERT's pooler)."""
    return {"electra": "electra", "xlnet": "xlnet"}.get(model_type, "pooler")


def _suffix(name: str) -> str:
    return next(s for s in SUFFIXES if name.endswith(s))


class HfTaskModel(NamedTuple):
    model: nn.Module  # in eval mode
    config: BertConfig
    setup: TaskSetup


def load_hf_task(directory: str | Path) -> HfTaskModel:
    """A transformers task-model directory -> our head model and its task setup. Heads without
    a pooler in transformers (QA, tagging) keep our encoder's frozen, unused initial one."""
    files = _read_directory(Path(directory))
    setup = task_setup_from_hf(files.values, files.config, Path(directory) / "config.json")
    model = build_head(
        setup.spec, build_encoder(files.config), len(setup.labels), pooling=setup.pooling
    )
    ours = task_state_dict_from_hf(
        files.weights, files.config, KEYS[setup.head], files.weights_path
    )
    load_converted(model, ours, files.weights_path)
    return HfTaskModel(model.eval(), files.config, setup)


def _read_directory(directory: Path) -> HfFiles:
    """hf.read_hf_directory, and ELECTRA's discriminator config (models/hf_electra.py)."""
    path = directory / "config.json"
    values = _read_json(path) if path.is_file() else {}
    if values.get("model_type") not in ("electra", "albert", "xlnet"):
        return read_hf_directory(directory)
    if values["model_type"] == "xlnet":
        config = xlnet_config_from_hf(values, path)
    elif values["model_type"] == "albert":
        config = albert_config_from_hf(values, path)
    else:
        config = electra_config_from_hf(values, None, path)
    weights, weights_path = _read_weights(directory)
    return HfFiles(values, config, weights, weights_path)


def config_to_hf_task(config: BertConfig | ElectraConfig, setup: TaskSetup) -> dict[str, Any]:
    """transformers' config.json for our fine-tuned model: class name, labels, problem type."""
    if config.model_type not in FAMILIES:
        raise ConfigError(f"model_type {config.model_type!r}: no transformers task model here")
    want = family_pooling(config.model_type)
    if setup.head in POOLED_HEADS and setup.pooling != want:
        reads = (
            "ElectraForSequenceClassification reads dense + GELU on the first token"
            if want == "electra"
            else "sequence classifiers read the pooled first token"
        )
        raise ConfigError(
            f"pooling={setup.pooling!r}: transformers' {reads} (pooling={want!r}), so this "
            "model has no Hugging Face equivalent"
        )
    suffix = {v: k for k, v in SUFFIXES.items()}[
        "classification" if setup.head == "regression" else setup.head
    ]
    if isinstance(config, ElectraConfig):
        d = electra_config_to_hf(config, "discriminator")
    elif isinstance(config, AlbertConfig):
        d = albert_config_to_hf(config, with_pair_head=False, with_mlm_head=False)
    elif isinstance(config, XLNetConfig):  # SequenceSummary's defaults: last, dense, tanh
        d = xlnet_config_to_hf(config, with_mlm_head=False)
        if setup.head == "span_qa":  # XLNetForQuestionAnswering is the beam-search SQuAD 2 head
            suffix = "ForQuestionAnsweringSimple"
    else:
        d = config_to_hf(config, with_pair_head=False)
    d["architectures"] = [FAMILIES[config.model_type] + suffix]
    if setup.head == "regression":
        d.update(problem_type="regression", id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    elif setup.head != "span_qa":
        d["id2label"] = {str(i): name for i, name in enumerate(setup.labels)}
        d["label2id"] = {name: i for i, name in enumerate(setup.labels)}
    return d


def save_hf_task(
    model: nn.Module, config: BertConfig, setup: TaskSetup, directory: str | Path
) -> None:
    """config.json + model.safetensors that transformers' <Family><Task>.from_pretrained loads."""
    d = config_to_hf_task(config, setup)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = task_state_dict_to_hf(model.state_dict(), config, KEYS[setup.head])
    (directory / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
