"""The `muppets` command: argument parsing only; each subcommand calls one function.

COMMANDS is the whole map from command words to recipes: (words, module, config class, function),
imported on use, so `muppets --help` imports no recipe (and no torch). A command's options are the
fields of its config dataclass (see cli/args.py). Before running, the resolved config is written to
`<out>/<command>.toml`. A MuppetsError prints one line, `muppets: error: FILE:LINE: what is wrong`,
and exits with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import textwrap
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from muppets.errors import MuppetsError


@dataclass(frozen=True)
class Command:
    words: str  # what the user types after `muppets`: "prepare", "tokenizer train"
    module: str  # the recipe's module, imported when the command runs or shows its --help
    config: str  # the name of its config dataclass in that module
    function: str  # the name of the function that takes the config
    help: str
    name: str = ""  # the resolved config's file name, <out>/<name>.toml (default: words, dashed)
    out_is_file: bool = False  # --out names a file: the command records its config in it
    elmo_command: str = ""  # the command that runs when the resolved --model is an elmo-* preset

    @property
    def file_name(self) -> str:
        return self.name or self.words.replace(" ", "-")

    def load(self) -> tuple[type, Any]:
        """(config class, function) of the recipe."""
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.function)


# A data table, one command per entry, kept out of the formatter's one-argument-per-line layout.
# fmt: off
_TABLE = [
    Command("tokenizer train", "muppets.data.prepare", "TokenizerTrainConfig", "train_tokenizer",
            "train a WordPiece tokenizer on text files"),
    Command("prepare", "muppets.recipes.entity_units", "PrepareConfig", "prepare",
            "tokenize a corpus once into memory-mapped token shards (+ ERNIE unit boundaries)"),
    Command("pretrain", "muppets.recipes.pretrain", "PretrainConfig", "pretrain",
            "pretrain a BERT/RoBERTa encoder on prepared shards (works under torchrun); "
            "--model elmo-* runs pretrain-elmo", elmo_command="pretrain-elmo"),
    Command("pretrain-elmo", "muppets.recipes.pretrain_elmo", "ElmoPretrainConfig",
            "pretrain_elmo", "pretrain an ELMo biLM on text files (works under torchrun)"),
    Command("pretrain-lm", "muppets.recipes.pretrain_lm", "LMPretrainConfig", "pretrain_lm",
            "pretrain a Transformer-XL language model on prepared shards, memories carried"),
    Command("pretrain-xlnet", "muppets.recipes.pretrain_xlnet", "XLNetPretrainConfig",
            "pretrain_xlnet", "pretrain XLNet (permutation LM, memories carried) on shards"),
    Command("evaluate-lm", "muppets.recipes.evaluate_lm", "EvaluateLMConfig", "evaluate_lm",
            "perplexity per piece and per word on WikiText .tokens files, by memory length"),
    Command("extract", "muppets.recipes.extract", "ExtractConfig", "extract",
            "write per-token features of an ELMo or BERT checkpoint to .npz or .safetensors",
            out_is_file=True),
    Command("finetune", "muppets.recipes.finetune", "FinetuneConfig", "finetune",
            "fine-tune on a task (GLUE, tsv/csv/jsonl, CoNLL NER, SQuAD); "
            "--task glue runs them all"),
    Command("evaluate", "muppets.recipes.evaluate", "EvaluateConfig", "run_evaluate",
            "score a fine-tuned model on a task's dev files"),
    Command("predict", "muppets.recipes.evaluate", "PredictConfig", "run_predict",
            "write a fine-tuned model's predictions for a file", out_is_file=True),
    Command("predict fill-mask", "muppets.recipes.fill_mask", "FillMaskConfig", "run_fill_mask",
            "print the top-k tokens for each [MASK] in a text", name="fill-mask"),
    Command("zero-shot", "muppets.crosslingual.run", "ZeroShotConfig", "zero_shot",
            "fine-tune on English, score every language (UD POS, XQuAD; Pires et al. 2019); "
            "tatoeba: retrieval from mean-pooled layers"),
    Command("convert", "muppets.recipes.convert", "ConvertConfig", "convert",
            "convert a checkpoint between muppets and Hugging Face transformers formats"),
    Command("export", "muppets.recipes.export", "ExportConfig", "export",
            "export a fine-tuned model to ONNX (--quantize int8 optional) for muppets serve"),
    Command("serve", "muppets.serve.run", "ServeConfig", "serve",
            "serve a model over HTTP: classify, tag, qa, fill-mask, embed; a page at /"),
    Command("quickstart", "muppets.quickstart.run", "QuickstartConfig", "run_quickstart",
            "the main job under one budget: tokenizer, BERT and ELMo pretraining, six SST-2 "
            "models compared, report.html (bundled sample, or --data-dir); rerun to resume"),
]
# fmt: on
COMMANDS = {command.words: command for command in _TABLE}


def build_parser() -> argparse.ArgumentParser:
    """The top level: --version, --debug and the command words; the rest goes to the command."""
    width = max(len(words) for words in COMMANDS)
    indent = " " * (width + 4)
    listing = "\n".join(
        textwrap.fill(
            c.help, 100, initial_indent=f"  {c.words:<{width}}  ", subsequent_indent=indent
        )
        for c in COMMANDS.values()
    )
    parser = argparse.ArgumentParser(
        prog="muppets",
        description="Pretrain, fine-tune and evaluate ELMo-to-BERT text encoders.",
        epilog=f"commands (muppets COMMAND --help for its options):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"muppets {version('muppets')}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND ...")
    return parser


def select(words: list[str]) -> tuple[Command, list[str]] | None:
    """The command named by the leading words, the longest match first (`predict fill-mask`
    before `predict`), and the arguments after them."""
    for n in (2, 1):
        if len(words) >= n and " ".join(words[:n]) in COMMANDS:
            return COMMANDS[" ".join(words[:n])], words[n:]
    return None


def command_parser(command: Command, add_help: bool = True) -> argparse.ArgumentParser:
    """One flag per option of the command's config (imports its recipe)."""
    from muppets.cli.args import add_config_flags

    parser = argparse.ArgumentParser(
        prog=f"muppets {command.words}", description=command.help, add_help=add_help
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    add_config_flags(parser, command.load()[0])
    return parser


# A negative number in exponent form (-1e6): argparse would take it for an option.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def attach_negative_numbers(argv: list[str]) -> list[str]:
    """`--flag -1e6` -> `--flag=-1e6`, which argparse reads as the flag's value."""
    joined: list[str] = []
    for token in argv:
        option = joined[-1] if joined else ""
        if option.startswith("--") and "=" not in option and NEGATIVE_NUMBER.match(token):
            joined[-1] = f"{option}={token}"
        else:
            joined.append(token)
    return joined


def parse_command(argv: list[str]) -> tuple[Command, argparse.Namespace]:
    """The command and its parsed options. The one rule that picks a command from an option:
    `pretrain` whose resolved model is an elmo-* preset runs `pretrain-elmo` on the same
    arguments, whose options fit a biLM trained on text; a transfo-xl-* preset runs
    `pretrain-lm` (contiguous streams and carried memories), an xlnet-* preset `pretrain-xlnet`."""
    selected = select(argv)
    if selected is None:
        valid = ", ".join(COMMANDS)
        build_parser().error(f"unknown command {' '.join(argv[:2])!r} (commands: {valid})")
    command, rest = selected
    rest = attach_negative_numbers(rest)
    if command.elmo_command:
        # --help waits for the command that runs: `pretrain --model elmo-tiny --help` is ELMo's
        known, _ = command_parser(command, add_help=False).parse_known_args(rest)
        try:
            from muppets.cli.args import resolved_option

            model = str(resolved_option(known, "model") or "")
        except MuppetsError:  # a bad --config file: build_config reports it (and obeys --debug)
            model = ""
        if model.startswith("elmo"):
            command = COMMANDS[command.elmo_command]
        elif model.startswith("transfo-xl"):  # a causal LM: streams and memories
            command = COMMANDS["pretrain-lm"]
        elif model.startswith("xlnet"):  # permutation LM over streams, memories carried
            command = COMMANDS["pretrain-xlnet"]
    return command, command_parser(command).parse_args(rest)


def main(argv: list[str] | None = None) -> int:
    top = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if not top.command:
        build_parser().error("a command is required (see muppets --help)")
    debug = top.debug
    try:
        from muppets.cli.args import build_config, write_resolved_config

        command, args = parse_command(top.command)
        debug = debug or getattr(args, "debug", False)
        config_cls, run = command.load()
        config = build_config(config_cls, args)
        out = getattr(config, "out", None)
        if out and not command.out_is_file:
            write_resolved_config(config, Path(out), f"{command.file_name}.toml")
        run(config)
    except MuppetsError as error:
        if debug:
            raise
        print(f"muppets: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muppets: interrupted", file=sys.stderr)
        return 130
    return 0
