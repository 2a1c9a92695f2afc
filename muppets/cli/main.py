"""The `muppets` command: argument parsing only; each subcommand calls one function.

Every subcommand takes its options from one config dataclass (see cli/args.py). Before running,
the resolved config is written to `<out>/<command>.toml`. A MuppetsError prints one line,
`muppets: error: FILE:LINE: what is wrong`, and exits with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from muppets.cli.args import add_config_flags, build_config, load_toml, write_resolved_config
from muppets.errors import MuppetsError


@dataclass(frozen=True)
class Command:
    name: str  # also the file name of the resolved config: <out>/<name>.toml
    help: str
    config_cls: Callable[[], type]  # imported on use, so `muppets --help` stays fast
    run: Callable[[Any], Any]
    out_is_file: bool = False  # --out names a file: the command records its config in it


def _tokenizer_train_config() -> type:
    from muppets.data.prepare import TokenizerTrainConfig

    return TokenizerTrainConfig


def _tokenizer_train(config: Any) -> Any:
    from muppets.data.prepare import train_tokenizer

    return train_tokenizer(config)


def _prepare_config() -> type:
    from muppets.data.prepare import PrepareConfig

    return PrepareConfig


def _prepare(config: Any) -> Any:
    from muppets.data.prepare import prepare_corpus

    return prepare_corpus(config)


def _pretrain_config() -> type:
    from muppets.recipes.pretrain import PretrainConfig

    return PretrainConfig


def _pretrain(config: Any) -> Any:
    from muppets.recipes.pretrain import pretrain

    return pretrain(config)


def _pretrain_elmo_config() -> type:
    from muppets.recipes.pretrain_elmo import ElmoPretrainConfig

    return ElmoPretrainConfig


def _pretrain_elmo(config: Any) -> Any:
    from muppets.recipes.pretrain_elmo import pretrain_elmo

    return pretrain_elmo(config)


def _extract_config() -> type:
    from muppets.recipes.extract import ExtractConfig

    return ExtractConfig


def _extract(config: Any) -> Any:
    from muppets.recipes.extract import extract

    return extract(config)


def _finetune_config() -> type:
    from muppets.recipes.finetune.run import FinetuneConfig

    return FinetuneConfig


def _finetune(config: Any) -> Any:
    from muppets.recipes.finetune.run import finetune

    return finetune(config)


def _evaluate_config() -> type:
    from muppets.recipes.evaluate import EvaluateConfig

    return EvaluateConfig


def _evaluate(config: Any) -> Any:
    from muppets.recipes.evaluate import run_evaluate

    return run_evaluate(config)


def _predict_config() -> type:
    from muppets.recipes.evaluate import PredictConfig

    return PredictConfig


def _predict(config: Any) -> Any:
    from muppets.recipes.evaluate import run_predict

    return run_predict(config)


def _fill_mask_config() -> type:
    from muppets.recipes.fill_mask import FillMaskConfig

    return FillMaskConfig


def _fill_mask(config: Any) -> Any:
    from muppets.recipes.fill_mask import run_fill_mask

    return run_fill_mask(config)


def _convert_config() -> type:
    from muppets.recipes.convert import ConvertConfig

    return ConvertConfig


def _convert(config: Any) -> Any:
    from muppets.recipes.convert import convert

    return convert(config)


def _quickstart_config() -> type:
    from muppets.quickstart.run import QuickstartConfig

    return QuickstartConfig


def _quickstart(config: Any) -> Any:
    from muppets.quickstart.run import run_quickstart

    return run_quickstart(config)


COMMANDS = {
    "tokenizer train": Command(
        "tokenizer-train",
        "train a WordPiece tokenizer on text files",
        _tokenizer_train_config,
        _tokenizer_train,
    ),
    "prepare": Command(
        "prepare",
        "tokenize a corpus once into memory-mapped token shards",
        _prepare_config,
        _prepare,
    ),
    "pretrain": Command(
        "pretrain",
        "pretrain a BERT/RoBERTa encoder on prepared shards (works under torchrun); "
        "--model elmo-* runs pretrain-elmo",
        _pretrain_config,
        _pretrain,
    ),
    "pretrain-elmo": Command(
        "pretrain-elmo",
        "pretrain an ELMo biLM on text files (works under torchrun)",
        _pretrain_elmo_config,
        _pretrain_elmo,
    ),
    "extract": Command(
        "extract",
        "write per-token features of an ELMo or BERT checkpoint to .npz or .safetensors",
        _extract_config,
        _extract,
        out_is_file=True,
    ),
    "finetune": Command(
        "finetune",
        "fine-tune on a task (GLUE, tsv/csv/jsonl, CoNLL NER, SQuAD); --task glue runs them all",
        _finetune_config,
        _finetune,
    ),
    "evaluate": Command(
        "evaluate",
        "score a fine-tuned model on a task's dev files",
        _evaluate_config,
        _evaluate,
    ),
    # Before `predict fill-mask`: `predict` is a command and also holds `predict fill-mask`.
    "predict": Command(
        "predict",
        "write a fine-tuned model's predictions for a file (or: predict fill-mask)",
        _predict_config,
        _predict,
        out_is_file=True,
    ),
    "predict fill-mask": Command(
        "fill-mask",
        "print the top-k tokens for each [MASK] in a text",
        _fill_mask_config,
        _fill_mask,
    ),
    "convert": Command(
        "convert",
        "convert a checkpoint between muppets and Hugging Face transformers formats",
        _convert_config,
        _convert,
    ),
    "quickstart": Command(
        "quickstart",
        "the main job under one budget: tokenizer, BERT and ELMo pretraining, six SST-2 models "
        "compared, report.html (bundled sample, or --data-dir); rerun to resume",
        _quickstart_config,
        _quickstart,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muppets",
        description="Pretrain, fine-tune and evaluate ELMo-to-BERT text encoders.",
    )
    parser.add_argument("--version", action="version", version=f"muppets {version('muppets')}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    firsts: dict[str, argparse.ArgumentParser] = {}  # the parser of each one-word command
    for words, command in COMMANDS.items():
        *group, leaf = words.split()
        subparsers = top
        if group:  # two-word commands such as `tokenizer train`
            if group[0] not in groups:
                holder = firsts.get(group[0])
                if holder is None:
                    holder = top.add_parser(group[0], help=f"{group[0]} commands")
                # A word that is also a command (`predict`) runs itself when no action follows.
                required = group[0] not in COMMANDS
                groups[group[0]] = holder.add_subparsers(metavar="ACTION", required=required)
            subparsers = groups[group[0]]
        sub = subparsers.add_parser(leaf, help=command.help, description=command.help)
        if not group:
            firsts[leaf] = sub
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        add_config_flags(sub, command.config_cls())
        sub.set_defaults(selected=command)
    return parser


def _route_elmo(argv: list[str]) -> list[str]:
    """`pretrain` with an ELMo preset (--model, --set model=, or model in --config, in that order
    of precedence) becomes `pretrain-elmo`, whose options fit a biLM trained on text."""
    words = [i for i, a in enumerate(argv) if not a.startswith("-")]
    if not words or argv[words[0]] != "pretrain":
        return argv
    found: dict[str, str] = {}
    for arg, value in zip(argv, [*argv[1:], ""], strict=True):
        if arg == "--model" or arg.startswith("--model="):
            found["flag"] = value if arg == "--model" else arg.partition("=")[2]
        elif arg == "--set" and value.startswith("model="):
            found["set"] = value.partition("=")[2]
        elif arg == "--config" and value:
            try:
                found["toml"] = str(load_toml(value).get("model", ""))
            except MuppetsError:
                pass  # reported by the normal path
    model = found.get("flag") or found.get("set") or found.get("toml") or ""
    if not model.startswith("elmo"):
        return argv
    return [*argv[: words[0]], "pretrain-elmo", *argv[words[0] + 1 :]]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_route_elmo(sys.argv[1:] if argv is None else list(argv)))
    command: Command = args.selected
    try:
        config = build_config(command.config_cls(), args)
        out = getattr(config, "out", None)
        if out and not command.out_is_file:
            write_resolved_config(config, Path(out), f"{command.name}.toml")
        command.run(config)
    except MuppetsError as error:
        if args.debug:
            raise
        print(f"muppets: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muppets: interrupted", file=sys.stderr)
        return 130
    return 0
