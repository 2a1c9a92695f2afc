"""Downstream tasks as plain data: TASKS = {"sst2": TaskSpec(...), ...}, filled right here.

A task is a reader (files -> examples), a head (classification, regression, span_qa, tagging), a
label list and a metric: ELECTRA's split of fine-tuning into task = reader + featurizer + head +
metric (google-research/electra, finetune/). Featurizers live in data/task_features.py, heads in
this package; this file ties them together and scores predictions.

A new tsv/csv/jsonl classification dataset needs no code: task "tabular" reads any file through a
column mapping (`Columns`) and takes its labels from the training file (or a given list).
Dev metrics that pick the best checkpoint follow Devlin et al. 2019 (Table 1 caption): MCC for
CoLA, F1 for MRPC and QQP, Spearman for STS-B, accuracy for the rest; F1 for SQuAD and NER.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from muppets.data.readers.conll import read_conll
from muppets.data.readers.conllu import UPOS_TAGS, read_conllu
from muppets.data.readers.glue import glue_path, glue_task, read_glue
from muppets.data.readers.squad import read_qa
from muppets.data.readers.tabular import read_table, table_labels
from muppets.data.text import ReadStats
from muppets.errors import ConfigError, InputError
from muppets.tasks import metrics
from muppets.tasks.classification import ClassificationObjective, SequenceClassifier
from muppets.tasks.span_qa import SpanQAHead, SpanQAObjective
from muppets.tasks.tagging import TaggingObjective, TokenTagger

HEADS = ("classification", "regression", "span_qa", "tagging")
# CoNLL-2003 NER tags in the order of Hugging Face's conll2003 dataset card.
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    head: str  # one of HEADS
    reader: str  # glue | table | squad | conll | conllu
    metric: str  # the dev score that selects the best checkpoint (larger is better)
    labels: tuple[str, ...] = ()  # class / tag names in id order; () = from the training file
    # split -> candidate file names under the data directory (GLUE: its own layout table)
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dev_splits: tuple[str, ...] = ("dev",)  # evaluated after training; the first picks the best
    max_seq_length: int = 128

    @property
    def percent(self) -> bool:
        """SQuAD scores are percentages already (the official scripts); the rest are fractions."""
        return self.head == "span_qa"


def _glue(name: str, metric: str) -> TaskSpec:
    spec = glue_task(name)
    head = "regression" if spec.regression else "classification"
    dev = ("dev_matched", "dev_mismatched") if name == "mnli" else ("dev",)
    return TaskSpec(name, head, "glue", metric, spec.labels, dev_splits=dev)


GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
_CONLL_FILES = {"train": ("train.txt", "eng.train"), "dev": ("valid.txt", "dev.txt", "eng.testa"),
                "test": ("test.txt", "eng.testb")}  # fmt: skip
# UD English-EWT, as the treebank names its files (gzipped or not): Pires et al. 2019 section 3.
_UD_FILES = {split: (f"en_ewt-ud-{split}.conllu", f"en_ewt-ud-{split}.conllu.gz")
             for split in ("train", "dev", "test")}  # fmt: skip
_SQUAD_FILES = {"train": ("train-v2.0.json", "train-v1.1.json", "train.json"),
                "dev": ("dev-v2.0.json", "dev-v1.1.json", "dev.json")}  # fmt: skip

TASKS: dict[str, TaskSpec] = {
    "cola": _glue("cola", "mcc"),
    "sst2": _glue("sst2", "accuracy"),
    "mrpc": _glue("mrpc", "f1"),
    "stsb": _glue("stsb", "spearman"),
    "qqp": _glue("qqp", "f1"),
    "mnli": _glue("mnli", "accuracy"),
    "qnli": _glue("qnli", "accuracy"),
    "rte": _glue("rte", "accuracy"),
    "wnli": _glue("wnli", "accuracy"),
    "tabular": TaskSpec("tabular", "classification", "table", "accuracy"),
    "tabular-regression": TaskSpec("tabular-regression", "regression", "table", "spearman"),
    "conll2003": TaskSpec("conll2003", "tagging", "conll", "f1", CONLL2003_TAGS, _CONLL_FILES),
    "conll": TaskSpec("conll", "tagging", "conll", "f1", (), _CONLL_FILES),
    "squad": TaskSpec("squad", "span_qa", "squad", "f1", (), _SQUAD_FILES, max_seq_length=384),
    # Universal POS tags of UD CoNLL-U files, scored by word accuracy (conll18_ud_eval.py UPOS)
    "upos": TaskSpec("upos", "tagging", "conllu", "accuracy", UPOS_TAGS, _UD_FILES),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}, glue")
    return TASKS[name]


@dataclass(frozen=True)
class Columns:
    """Where the text and the label are in a tabular file: a header name or a column index
    (an integer, negative from the end); jsonl files use key names."""

    text_a: str | int = "sentence"
    text_b: str | int | None = None
    label: str | int = "label"
    format: str | None = None  # tsv | csv | jsonl; None: from the file name
    header: bool = True


# ---------------------------------------------------------------- files and examples


def split_path(spec: TaskSpec, data_dir: str | Path | None, split: str) -> Path:
    """The file of `split` under `data_dir` (GLUE: its folder layout)."""
    if spec.reader == "table":  # any file: there is no standard name to look for
        raise ConfigError(f"task {spec.name}: give the {split} file (--{split}-file)")
    if data_dir is None:
        raise ConfigError(f"task {spec.name}: give --data DIR or the {split} file")
    if spec.reader == "glue":
        return glue_path(spec.name, data_dir, split)
    for name in spec.files.get(split, ()):
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    wanted = " or ".join(spec.files.get(split, ())) or f"a {split} file"
    raise InputError(f"no {spec.name} {split} file ({wanted}) here", data_dir)


def find_test_file(spec: TaskSpec, data_dir: str | Path | None, dev_paths: dict) -> dict[str, Path]:
    """{"test": the task's test file under data_dir} when it has one (CoNLL's test.txt), scored
    after training by every path; {} otherwise. A dev file that is a test file (the best model
    picked on test) gets a one-line warning."""
    found = None
    if data_dir is not None and spec.files.get("test"):
        try:
            found = split_path(spec, data_dir, "test").resolve()
        except InputError:
            pass
    for path in dev_paths.values():
        name = Path(path).name.lower()
        if Path(path).resolve() == found or name.startswith("test") or name == "eng.testb":
            warning = "is a test file used as the dev file: the best model is picked on it"
            print(f"warning: {path} {warning}, so its score is not a held-out score")
            return {}
    return {"test": found} if found else {}


def label_counts(labels: Sequence[str], splits: dict[str, list]) -> str:
    """ "labels: neg (train 40, dev 8), pos (train 60, dev 12)": the label set of a
    classification task and how often each label is in each split's examples."""
    counts = {split: Counter(e.label for e in examples) for split, examples in splits.items()}
    shown = []
    for i, name in enumerate(labels):
        per_split = ", ".join(f"{split} {c[i]}" for split, c in counts.items())
        shown.append(f"{name} ({per_split})")
    return f"labels: {', '.join(shown)}"


def read_split(
    spec: TaskSpec,
    path: str | Path,
    split: str,
    labels: Sequence[str] = (),
    columns: Columns = Columns(),
    labelled: bool = True,
    errors: str = "strict",
) -> list:
    """Examples of one file: tabular.Example, squad.QAExample or conll.Sentence.

    labelled=False reads a file without labels (GLUE test layout; tabular without a label).
    errors="replace" reads bytes that are not UTF-8 as U+FFFD (counted and printed); "strict"
    stops at the first with its file and line. SQuAD answers whose offset was repaired or
    dropped are printed as one counted line (the first one shown), not as Python warnings.
    """
    stats = ReadStats()
    if spec.reader == "glue":
        if not labelled:  # GLUE's test layout (MNLI's two test files share one)
            split = "test_matched" if spec.name == "mnli" else "test"
        examples = read_glue(path, spec.name, split, errors, stats)
    elif spec.reader == "table":
        regression = spec.head == "regression"
        label = columns.label if labelled else None
        text = {"text_a": columns.text_a, "text_b": columns.text_b, "label": label}
        layout = {"format": columns.format, "header": columns.header, "guid_prefix": f"{split}-"}
        examples = read_table(
            path, **text, labels=labels, regression=regression, **layout, errors=errors, stats=stats
        )
    elif spec.reader == "squad":
        with warnings.catch_warnings():  # the reader's per-answer warnings: counted below
            warnings.simplefilter("ignore")
            examples, qa = read_qa(path, errors)
        stats.replaced_lines = qa.replaced_lines
        if qa.messages:
            repaired = f"{qa.repaired} answer offsets repaired, {qa.dropped} answers dropped"
            print(f"{path}: {repaired} (first: {qa.messages[0]})")
    elif spec.reader == "conllu":
        examples = read_conllu(path, errors=errors, stats=stats)
    else:
        examples = read_conll(path, errors=errors, stats=stats)
    if stats.replaced_lines:
        print(f"{path}: {stats.replaced_lines} lines with bytes that are not UTF-8 (replaced)")
    return examples


def has_labels(spec: TaskSpec, path: str | Path) -> bool:
    """Whether a file holds gold labels, told by its columns (not by its name): a GLUE file with
    its task's label column (CoLA: train/dev have no header, test opens with an `index` header).
    QA and tagging files are read with their answers/tags; other tables need no labels to predict.
    """
    from muppets.data.text import read_lines

    if spec.head in ("span_qa", "tagging"):
        return True
    if spec.reader != "glue":
        return False
    lines = read_lines(str(path), "replace", ReadStats())
    fields = next((text for _, text in lines if text.strip()), "").rstrip("\r").split("\t")
    lines.close()
    glue = glue_task(spec.name)
    return fields[0] != "index" if glue.label is None else glue.label in fields


def training_labels(
    spec: TaskSpec, train_path: str | Path, columns: Columns = Columns(), errors: str = "strict"
) -> list:
    """The label list: the task's own, else collected from the training file (sorted; "O"
    first for tags)."""
    if spec.labels or spec.head in ("regression", "span_qa"):
        return list(spec.labels)
    if spec.reader == "table":
        return table_labels(train_path, columns.label, columns.format, columns.header, errors)
    tags = {tag for sentence in read_conll(train_path, errors=errors) for tag in sentence.tags}
    return sorted(tags, key=lambda t: (t != "O", t[2:], t))


# ---------------------------------------------------------------- heads and objectives


def build_head(
    spec: TaskSpec,
    encoder: nn.Module,
    num_labels: int,
    dropout: float = 0.1,
    pooling: str = "pooler",
) -> nn.Module:
    """The task's head over any encoder of the protocol (num_labels ignored for regression/QA)."""
    if spec.head == "classification":
        return SequenceClassifier(encoder, num_labels, dropout, pooling)
    if spec.head == "regression":
        return SequenceClassifier(encoder, 1, dropout, pooling)
    if spec.head == "span_qa":
        return SpanQAHead(encoder)
    return TokenTagger(encoder, num_labels, dropout)


def task_objective(spec: TaskSpec):
    if spec.head in ("classification", "regression"):
        return ClassificationObjective(regression=spec.head == "regression")
    return SpanQAObjective() if spec.head == "span_qa" else TaggingObjective()


# ---------------------------------------------------------------- scores


def score(
    spec: TaskSpec,
    examples: Sequence,
    predictions,
    squad_v2: bool = False,
    na_probs=None,
    spans=None,
) -> dict:
    """Dev scores of predictions against the examples' gold labels.

    predictions: label ids / floats (classification, regression), tag lists (tagging) or
    {question id: answer text} (QA). NER tagging adds "per_type" to entity F1; POS tagging
    (metric accuracy) scores every word; everything else is a number.
    SQuAD v2.0: the predictions are scored as they are ("" = no answer; no threshold re-applied);
    with na_probs (null odds per question) and spans (each question's best non-null answer) also
    evaluate-v2.0.py's best_exact/best_f1 and their thresholds, searched over the null odds.
    Every question is scored, or this stops saying why.
    """
    if spec.head == "span_qa":
        return _qa_scores(examples, predictions, squad_v2, na_probs, spans)
    if spec.head == "tagging" and spec.metric == "accuracy":  # POS: every word's tag
        gold = [tag for s in examples for tag in s.tags]
        return {"accuracy": metrics.accuracy([t for p in predictions for t in p], gold)}
    if spec.head == "tagging":
        return metrics.entity_scores([s.tags for s in examples], predictions)
    gold = [e.label for e in examples]
    if any(g is None for g in gold):
        raise InputError("cannot score a file without labels", examples[0].path)
    if spec.reader == "glue":
        return metrics.glue_metrics(spec.name, predictions, gold)
    if spec.head == "regression":
        return {
            "pearson": metrics.pearson(predictions, gold),
            "spearman": metrics.spearman(predictions, gold),
        }
    out = {"accuracy": metrics.accuracy(predictions, gold)}
    if set(gold) | set(predictions) <= {0, 1}:  # binary: F1 of class 1
        out["f1"] = metrics.binary_f1(predictions, gold)
    out["mcc"] = metrics.matthews_corr(predictions, gold)
    return out


def _qa_scores(examples, predictions, squad_v2, na_probs, spans) -> dict:
    gold = {e.id: e.gold_texts for e in examples}
    unlabelled = [e for e in examples if not e.gold_texts and not e.is_impossible]
    if unlabelled:
        raise InputError(
            f"{len(unlabelled)} of {len(examples)} questions have no gold answer: cannot score "
            "them (use `muppets predict`)",
            unlabelled[0].path,
            unlabelled[0].line,
        )
    if not squad_v2:
        impossible = sum(e.is_impossible for e in examples)
        if impossible:
            raise InputError(
                f"{impossible} of {len(examples)} questions are unanswerable (SQuAD v2.0) but the "
                "model was fine-tuned on SQuAD v1.1 and always answers: evaluate it on a v1.1 "
                "file, or fine-tune on v2.0",
                examples[0].path,
            )
        return metrics.squad_v1_scores(gold, predictions)
    out = metrics.squad_v2_scores(gold, predictions, na_prob_threshold=math.inf)
    if na_probs is not None and spans is not None:
        best = metrics.squad_v2_scores(gold, spans, na_probs)
        out.update({k: v for k, v in best.items() if k.startswith("best_")})
    return out
