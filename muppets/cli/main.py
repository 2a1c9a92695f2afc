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

from muppets.cli.args import add_config_flags, build_config, write_resolved_config
from muppets.errors import MuppetsError


@dataclass(frozen=True)
class Command:
    name: str  # also the file name of the resolved config: <out>/<name>.toml
    help: str
    config_cls: Callable[[], type]  # imported on use, so `muppets --help` stays fast
    run: Callable[[Any], Any]


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
    from muppets.training.pretrain import PretrainConfig

    return PretrainConfig


def _pretrain(config: Any) -> Any:
    from muppets.training.pretrain import pretrain

    return pretrain(config)


def _fill_mask_config() -> type:
    from muppets.training.inference import FillMaskConfig

    return FillMaskConfig


def _fill_mask(config: Any) -> Any:
    from muppets.training.inference import run_fill_mask

    return run_fill_mask(config)


def _convert_config() -> type:
    from muppets.training.inference import ConvertConfig

    return ConvertConfig


def _convert(config: Any) -> Any:
    from muppets.training.inference import convert

    return convert(config)


def _quickstart_config() -> type:
    from muppets.training.quickstart import QuickstartConfig

    return QuickstartConfig


def _quickstart(config: Any) -> Any:
    from muppets.training.quickstart import run_quickstart

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
        "pretrain a BERT/RoBERTa encoder on prepared shards (works under torchrun)",
        _pretrain_config,
        _pretrain,
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
        "run the whole pipeline on the bundled sample",
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
    for words, command in COMMANDS.items():
        *group, leaf = words.split()
        subparsers = top
        if group:  # two-word commands such as `tokenizer train`
            if group[0] not in groups:
                holder = top.add_parser(group[0], help=f"{group[0]} commands")
                groups[group[0]] = holder.add_subparsers(metavar="ACTION", required=True)
            subparsers = groups[group[0]]
        sub = subparsers.add_parser(leaf, help=command.help, description=command.help)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        add_config_flags(sub, command.config_cls())
        sub.set_defaults(selected=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Command = args.selected
    try:
        config = build_config(command.config_cls(), args)
        out = getattr(config, "out", None)
        if out:
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
