"""GLUE tasks: one table of file layouts, label lists and metric names; a reader per split.

Layouts as distributed by GLUE's `download_glue_data.py` (checked against the real dev/test
files of CoLA, SST-2, MRPC, STS-B, QNLI, RTE, WNLI and the diagnostic set; MNLI and QQP follow
the GLUE layout, the same one Hugging Face's `glue.py` processors read):

- CoLA train/dev: no header, 4 columns `source, label, original label, sentence`; test has a
  header `index, sentence`.
- MRPC: header `Quality, #1 ID, #2 ID, #1 String, #2 String`, train/dev start with a UTF-8 BOM.
- STS-B: 10 columns, text by header name `sentence1`/`sentence2`, float label `score` (0-5).
- MNLI: `sentence1`/`sentence2`, label `gold_label` (the last column; dev has label1..label5).
- Test splits have no label column; their examples have `label=None`.

Text columns are found by header name, so column order can differ between splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from muppets.data.readers.tabular import Example, read_table
from muppets.data.text import ReadStats
from muppets.errors import InputError

BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")
NLI = ("contradiction", "entailment", "neutral")  # Hugging Face's MNLI label order


@dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task's files are and how to read them."""

    directory: str  # the task's folder in the GLUE data directory
    labels: tuple[str, ...]  # class names in label-id order; () for regression (STS-B)
    metric: str  # a name `muppets.tasks.metrics.glue_metrics` knows
    text_a: str  # header names of the text and label columns
    text_b: str | None
    label: str | None
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    )
    # (text_a index, label index) for splits written without a header (CoLA train/dev)
    headerless: tuple[int, int] | None = None
    headerless_splits: tuple[str, ...] = ()
    label_range: tuple[float, float] | None = None  # regression scores outside it are errors

    @property
    def regression(self) -> bool:
        return not self.labels


_MNLI_SPLITS = {
    "train": "train.tsv",
    "dev_matched": "dev_matched.tsv",
    "dev_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}

GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "CoLA", BINARY, "mcc", "sentence", None, None,
        headerless=(3, 1), headerless_splits=("train", "dev"),
    ),
    "sst2": GlueTask("SST-2", BINARY, "accuracy", "sentence", None, "label"),
    "mrpc": GlueTask("MRPC", BINARY, "accuracy_f1", "#1 String", "#2 String", "Quality"),
    "stsb": GlueTask(
        "STS-B", (), "pearson_spearman", "sentence1", "sentence2", "score", label_range=(0, 5)
    ),
    "qqp": GlueTask("QQP", BINARY, "accuracy_f1", "question1", "question2", "is_duplicate"),
    "mnli": GlueTask("MNLI", NLI, "accuracy", "sentence1", "sentence2", "gold_label", _MNLI_SPLITS),
    "qnli": GlueTask("QNLI", ENTAILMENT, "accuracy", "question", "sentence", "label"),
    "rte": GlueTask("RTE", ENTAILMENT, "accuracy", "sentence1", "sentence2", "label"),
    "wnli": GlueTask("WNLI", BINARY, "accuracy", "sentence1", "sentence2", "label"),
    # The diagnostic set: MNLI labels, test only (scored by the GLUE server with R3, i.e. MCC).
    "ax": GlueTask(
        "diagnostic", NLI, "mcc", "sentence1", "sentence2", None, {"test": "diagnostic.tsv"}
    ),
}  # fmt: skip


def glue_task(task: str) -> GlueTask:
    """The table entry of `task`; an unknown name lists the valid ones."""
    if task not in GLUE_TASKS:
        raise InputError(f"unknown GLUE task {task!r}; valid tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[task]


def read_glue(
    path: str | Path,
    task: str,
    split: str,
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> list[Example]:
    """Examples of one GLUE file read with the layout of `task`'s `split`.

    Splits whose name starts with "test" are read without labels. guid is `{split}-{n}`.
    `errors` and `stats` as in `read_table` (errors="replace": bytes that are not UTF-8 become
    U+FFFD, counted in stats.replaced_lines).
    """
    spec = glue_task(task)
    if split not in spec.splits:
        raise InputError(f"{task} has no split {split!r}; valid splits: {', '.join(spec.splits)}")
    labeled = not split.startswith("test") and spec.label is not None
    if split in spec.headerless_splits:
        text_a, label = spec.headerless
        return read_table(
            path,
            text_a,
            None,
            label,
            spec.labels,
            spec.regression,
            format="tsv",
            header=False,
            guid_prefix=f"{split}-",
            errors=errors,
            stats=stats,
        )
    return read_table(
        path,
        spec.text_a,
        spec.text_b,
        spec.label if labeled else None,
        spec.labels,
        spec.regression,
        format="tsv",
        header=True,
        guid_prefix=f"{split}-",
        label_range=spec.label_range,
        errors=errors,
        stats=stats,
    )


def glue_path(task: str, data_dir: str | Path, split: str) -> Path:
    """The file of `split`: `data_dir/<task folder>/<file>`, or `data_dir/<file>` when data_dir is
    already the task's folder."""
    spec = glue_task(task)
    if split not in spec.splits:
        raise InputError(f"{task} has no split {split!r}; valid splits: {', '.join(spec.splits)}")
    name = spec.splits[split]
    for candidate in (Path(data_dir) / spec.directory / name, Path(data_dir) / name):
        if candidate.is_file():
            return candidate
    raise InputError(f"no {task} {split} file {name!r} here or in {spec.directory}/", data_dir)


def read_glue_task(
    task: str, data_dir: str | Path, split: str, errors: str = "strict"
) -> list[Example]:
    """Examples of `task`'s `split` under a GLUE data directory (holding CoLA/, SST-2/, ...)."""
    return read_glue(glue_path(task, data_dir, split), task, split, errors)
