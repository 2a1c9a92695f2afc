"""`muppets zero-shot`: zero-shot cross-lingual transfer, the measurement of Pires et al. 2019
(How multilingual is Multilingual BERT?, sections 2-3) and XQuAD (Artetxe et al. 2020).

A pretrained encoder is fine-tuned on English only (`finetune`: UD English-EWT for `upos`,
SQuAD v1.1 for `squad`) and the one fine-tuned model is scored on every language's file
(`evaluate`: UD PUD test, XQuAD), one table per task with a row per language, written to
`<out>/zero-shot.json`. `tatoeba` fine-tunes nothing: translation retrieval from mean-pooled
hidden layers (tatoeba.py). Test files are `--test LANG=FILE ...`, or found under `--data`:
`<lang>_pud-ud-test.conllu[.gz]`, `xquad.<lang>.json`, `tatoeba.<xxx>-eng.<xxx>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from muppets.crosslingual.tatoeba import find_pairs, tatoeba_scores
from muppets.data.multilingual import parse_corpora
from muppets.errors import ConfigError, InputError
from muppets.recipes.evaluate import EvaluateConfig, run_evaluate
from muppets.recipes.finetune import FinetuneConfig, finetune
from muppets.tasks.registry import split_path, task_spec
from muppets.training.device import pick_device
from muppets.training.options import Precision, device_option, from_options, group, option

TASKS = ("upos", "squad", "tatoeba")
RESULT = "zero-shot.json"
# a test file's language, from the names the UD and XQuAD releases use
_TEST_NAMES = {
    "upos": re.compile(r"^([a-z]{2,3})_pud-ud-test\.conllu(\.gz)?$"),
    "squad": re.compile(r"^xquad\.([a-z]{2,3})\.json$"),
}


@dataclass
class ZeroShotConfig:
    task: str = option("upos (UD POS), squad (XQuAD) or tatoeba (retrieval, no fine-tuning)", "")
    model: str = option("pretrained checkpoint directory", "")
    data: str | None = option("directory of the test files (ud/, xquad/ or tatoeba-laser/)")
    test: list[str] = field(
        default_factory=list, metadata={"help": "LANG=FILE per language (instead of --data)"}
    )
    train_file: str | None = option("English training file (upos: under --data if not given)")
    dev_file: str | None = option("English dev file that picks the best epoch")
    finetuned: str | None = option("score this fine-tuned model instead of fine-tuning one")
    out: str = option("directory: finetune/, zero-shot.json", "runs/zero-shot")
    epochs: int = option("fine-tuning epochs", 2)
    learning_rate: float = option("fine-tuning peak learning rate", 5e-5)
    batch_size: int = option("fine-tuning batch size", 32)
    max_seq_length: int | None = option("tokens per input (default: the task's)")
    seed: int = option("fine-tuning seed", 1)
    eval_batch_size: int = option("examples per prediction batch", 64)
    layer: int | None = option(
        "tatoeba: the layer shown (0: embeddings; default: the best on these pairs, an upper "
        "bound; every layer is in the json)"
    )
    device: str = device_option()
    arithmetic: Precision = group(Precision)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.model and not self.finetuned:
            raise ConfigError("model is required (a pretrained checkpoint directory)")
        if not self.data and not self.test:
            raise ConfigError("give --data DIR or --test LANG=FILE ...")
        if self.test and parse_corpora(self.test, "test") is None:
            raise ConfigError(f"test: {self.test[0]!r} has no language code (write LANG=FILE)")


def language_files(config: ZeroShotConfig) -> dict[str, Path]:
    """{language: file}, English first, then by language code."""
    if config.test:
        corpora = parse_corpora(config.test, "test") or []
        for corpus in corpora:
            if len(corpus.inputs) != 1:
                raise ConfigError(f"test: language {corpus.language!r} is given more than once")
        found = {c.language: Path(c.inputs[0]) for c in corpora}
    elif config.task == "tatoeba":
        return {}
    else:
        directory = Path(config.data)
        if not directory.is_dir():
            raise InputError("no such directory", directory)
        names = _TEST_NAMES[config.task]
        found = {m.group(1): p for p in directory.iterdir() if (m := names.match(p.name))}
        if not found:
            raise InputError(f"no {config.task} test files ({names.pattern}) here", directory)
    return dict(sorted(found.items(), key=lambda item: (item[0] != "en", item[0])))


def _finetuned(config: ZeroShotConfig) -> str:
    """Fine-tune on English with the `finetune` recipe; its run directory."""
    if config.finetuned:
        return config.finetuned
    out = Path(config.out) / "finetune"
    train, dev = config.train_file, config.dev_file
    if config.task == "upos" and config.data:  # EWT beside the PUD files, when not given
        spec = task_spec("upos")
        train = train or str(split_path(spec, config.data, "train"))
        dev = dev or str(split_path(spec, config.data, "dev"))
    if not train or not dev:
        raise ConfigError(f"{config.task}: give --train-file and --dev-file (English)")
    values = dict(
        task=config.task,
        train_file=train,
        dev_file=dev,
        model=config.model,
        out=str(out),
        seeds=str(config.seed),
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        max_seq_length=config.max_seq_length,
        eval_batch_size=config.eval_batch_size,
        device=config.device,
        precision=config.arithmetic.precision,
    )
    finetune(from_options(FinetuneConfig, **values))
    return str(out)


def zero_shot(config: ZeroShotConfig) -> dict:
    """Fine-tune once on English, score every language; prints the table, writes the json."""
    tests = language_files(config)
    if config.task == "tatoeba":
        return _tatoeba(config)
    model = _finetuned(config)
    rows = {}
    for language, path in tests.items():
        evaluate = EvaluateConfig(
            model=model,
            file=str(path),
            batch_size=config.eval_batch_size,
            device=config.device,
            arithmetic=config.arithmetic,
        )
        rows[language] = {"file": str(path), **run_evaluate(evaluate)["file"]}
    metrics = ["accuracy"] if config.task == "upos" else ["exact", "f1"]
    title = f"{config.task} zero-shot: fine-tuned on English ({model}), scored per language"
    print("\n" + format_table(title, rows, metrics))
    return _write(config, {"task": config.task, "model": model, "languages": rows})


def _tatoeba(config: ZeroShotConfig) -> dict:
    if config.test:
        raise ConfigError("tatoeba reads its pairs from --data (tatoeba.xxx-eng.xxx/.eng)")
    pairs = find_pairs(config.data)
    device = pick_device(config.device)
    model = config.model or str(config.finetuned)  # a fine-tuned model: its encoder
    layers = tatoeba_scores(model, pairs, device, config.eval_batch_size)
    count = len(next(iter(layers.values())))
    if config.layer is not None and not 0 <= config.layer < count:
        raise ConfigError(f"layer must be in [0, {count - 1}] for this model, got {config.layer}")
    layer = config.layer
    if layer is None:  # the layer best on average over languages and directions
        means = [sum(sum(s[k].values()) for s in layers.values()) for k in range(count)]
        layer = max(range(count), key=means.__getitem__)
    rows = {language: dict(scores[layer]) for language, scores in layers.items()}
    title = f"tatoeba retrieval: mean-pooled layer {layer} of {model} (0: embeddings)"
    print("\n" + format_table(title, rows, ["xx_to_en", "en_to_xx"]))
    result = {"task": "tatoeba", "model": model, "layer": layer, "languages": rows}
    return _write(config, {**result, "every_layer": layers})


def format_table(title: str, rows: dict[str, dict], metrics: list[str]) -> str:
    """One row per language; scores as the evaluate lines print them."""
    lines = [title, f"{'language':<10}" + "".join(f"{m:>13}" for m in metrics)]
    for language, scores in rows.items():
        lines.append(f"{language:<10}" + "".join(f"{scores[m]:>13.4f}" for m in metrics))
    return "\n".join(lines)


def _write(config: ZeroShotConfig, result: dict) -> dict:
    path = Path(config.out) / RESULT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"zero-shot: {len(result['languages'])} languages -> {path}")
    return result
