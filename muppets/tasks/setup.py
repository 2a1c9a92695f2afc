"""A fine-tuned model's task setup: what task.json holds, enough to read, featurize, decode and
name the predictions of a task again, whichever recipe trained the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from muppets.data.task_features import classification_features, qa_features, tagging_features
from muppets.errors import InputError
from muppets.tasks.registry import Columns, TaskSpec, read_split, task_spec
from muppets.tokenization.wordpiece import WordPieceTokenizer

TASK_FILE = "task.json"


@dataclass
class TaskSetup:
    """What task.json holds: enough to featurize, decode and name the predictions again."""

    task: str
    head: str
    labels: list[str]
    max_seq_length: int
    pooling: str = "pooler"
    columns: dict = field(default_factory=dict)  # tabular tasks: a Columns as a dict
    # None: not known (a transformers QA model): SQuAD v2.0 on a file with unanswerable questions
    squad_v2: bool | None = False
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    null_threshold: float = 0.0  # SQuAD v2.0: answer "" when null - best span score > this

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def featurize(self, examples: list, tokenizer: WordPieceTokenizer, labelled: bool = True):
        if self.head == "span_qa":
            return qa_features(
                examples, tokenizer, self.max_seq_length, self.doc_stride, self.max_query_length
            )
        if self.head == "tagging":
            labels = self.labels if labelled else None
            return tagging_features(examples, tokenizer, self.max_seq_length, labels)
        return classification_features(examples, tokenizer, self.max_seq_length)

    def for_examples(self, examples: list) -> TaskSetup:
        """This setup for a file: an unknown SQuAD version (squad_v2 None) becomes v2.0 when a
        question is unanswerable, as transformers' run_qa.py --version_2_with_negative."""
        if self.squad_v2 is not None:
            return self
        return dataclasses.replace(self, squad_v2=any(e.is_impossible for e in examples))

    def read(self, path: str | Path, split: str, labelled: bool = True, errors="strict") -> list:
        columns = Columns(**self.columns)
        return read_split(self.spec, path, split, self.labels, columns, labelled, errors)


def save_task(directory: str | Path, setup: TaskSetup) -> None:
    text = json.dumps(dataclasses.asdict(setup), indent=2) + "\n"
    (Path(directory) / TASK_FILE).write_text(text, encoding="utf-8")


def load_task(directory: str | Path) -> TaskSetup:
    """The TaskSetup saved in a fine-tuned directory; a bad task.json names itself."""
    path = Path(directory) / TASK_FILE
    try:
        return TaskSetup(**json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", path, e.lineno) from None
    except TypeError as e:
        raise InputError(f"not a task file of this muppets version: {e}", path) from None
