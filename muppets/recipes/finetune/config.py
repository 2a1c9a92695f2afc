"""FinetuneConfig: the options of `muppets finetune`, for both of its paths (run.py)."""

from __future__ import annotations

from dataclasses import dataclass

from muppets.errors import ConfigError
from muppets.recipes.finetune.curves import parse_train_sizes
from muppets.recipes.finetune.features import check_downstream
from muppets.tasks.classification import POOLINGS
from muppets.tasks.registry import TASKS, Columns, task_spec
from muppets.training.options import (
    Epochs,
    Logging,
    Optimization,
    Precision,
    check,
    device_option,
    group,
    one_or_list,
    option,
)


def _column(text: str | None) -> str | int | None:
    """A column given on the command line: an integer is an index, anything else a name."""
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass
class FinetuneConfig:
    task: str = option(f"{', '.join(TASKS)}, or glue (every GLUE task under --data)", "")
    data: str | None = option("data directory (GLUE: holding SST-2/...; CoNLL: train.txt...)")
    train_file: str | None = option("training file (instead of the one under --data)")
    dev_file: str | None = option("dev file (instead of the one under --data)")
    model: str = option("checkpoint directory, or a preset from scratch (or random-embeddings)", "")
    tokenizer: str | None = option("tokenizer directory (default: the checkpoint's)")
    out: str = option("output directory (one seed-<s>/ per seed)", "runs/finetune")
    seeds: str = option("comma-separated seeds; each is run and the median reported", "1")
    freeze: bool = option("train only the head on frozen encoder features", False)
    batch_size: int | list[int] = option(
        "training examples (QA: windows) per step, or a comma-separated list selected on dev",
        32,
        listable=True,
    )
    eval_batch_size: int = option("examples per prediction batch", 128)
    max_seq_length: int | None = option("tokens per input (default: 128, QA 384)")
    # Devlin et al. appendix A.3: warmup over 10% of the steps. The rate and the epochs fit the
    # encoder's size unless given (None: hyperparameters.py); a list of them is selected on dev.
    optimization: Optimization = group(Optimization, learning_rate=None, warmup_ratio=0.1)
    run: Epochs = group(Epochs, epochs=None)
    train_sizes: str | None = option(
        "learning curve: comma-separated training-set sizes (or all), nested seeded subsets"
    )
    train_size_seed: int = option("seed of the one permutation the --train-sizes subsets share", 0)
    logging: Logging = group(Logging)
    dropout: float = option(
        "hidden and attention dropout of the encoder, and the head's, whatever the checkpoint's",
        0.1,
    )
    pooling: str | None = option(
        "classification input: pooler, cls, mean or electra (dense + GELU on the first token; "
        "default: electra for an ELECTRA model, pooler otherwise)"
    )
    device: str = device_option()
    arithmetic: Precision = group(Precision)
    # tabular tasks: the column mapping (a header name, or an integer index)
    text_a: str = option("tabular: column of the first text", "sentence")
    text_b: str | None = option("tabular: column of the second text (pairs)")
    label_column: str = option("tabular: column of the label", "label")
    labels: list[str] | None = option("class names in id order (default: from the train file)")
    format: str | None = option("tabular: tsv, csv or jsonl (default: from the file name)")
    header: bool = option("tabular: the first row names the columns", True)
    # extractive QA
    doc_stride: int = option("QA: context tokens between window starts", 128)
    max_query_length: int = option("QA: question tokens kept", 64)
    max_answer_length: int = option("QA: longest answer in tokens", 30)
    null_threshold: float = option("SQuAD v2.0: answer '' when null - best > this", 0.0)
    # frozen features under a small task model (features.py)
    downstream: str | None = option("bilstm or bag-of-embeddings over frozen ELMo features")
    downstream_learning_rate: float = option("--downstream: peak Adam learning rate", 1e-3)
    downstream_hidden_size: int = option("--downstream bilstm: LSTM size per direction", 256)
    downstream_dropout: float = option("--downstream: dropout on features and states", 0.5)
    embedding_dim: int = option("--model random-embeddings: word embedding size", 300)
    min_count: int = option("--model random-embeddings: rarer training words are <UNK>", 2)
    elmo_word_embeddings: bool = option(
        "--model ELMO: concatenate trainable word embeddings (--embedding-dim, vocabulary of the "
        "training split as for random-embeddings) with the ELMo mix, as Peters et al. 2018 "
        "section 3.3",
        False,
    )
    whitespace_tokens: bool = option("--downstream: words split on whitespace only (SST-2)", False)
    errors: str = option(
        "bytes that are not UTF-8: strict (stop at file:line) or replace", "strict"
    )
    feature_cache_mb: int = option("ELMo: cache all layers if they fit (0: biLM every batch)", 2048)

    def __post_init__(self):
        if not self.task or not self.model:
            raise ConfigError("task and model are required (e.g. --task sst2 --model DIR)")
        if self.task != "glue":
            task_spec(self.task)
        elif self.train_file or self.dev_file:
            raise ConfigError("--task glue reads every task's files under --data, not --*-file")
        self.batch_size = one_or_list(self.batch_size, int, "batch_size")
        parse_train_sizes(self.train_sizes)
        rules = [
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("errors", self.errors in ("strict", "replace"), "strict or replace"),
            ("pooling", self.pooling in (None, *POOLINGS), "pooler, cls, mean or electra"),
        ]
        check(self, rules)
        self.seed_list()
        check_downstream(self)

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in str(self.seeds).split(",") if s.strip()]
        except ValueError:
            message = f"seeds must be comma-separated integers, got {self.seeds!r}"
            raise ConfigError(message) from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct integers, got {self.seeds!r}")
        return seeds

    def columns(self) -> Columns:
        text_a, text_b, label = (
            _column(self.text_a),
            _column(self.text_b),
            _column(self.label_column),
        )
        return Columns(text_a, text_b, label, self.format, self.header)
