"""The command table and how `muppets` picks a command: longest words first, one post-parse rule
for ELMo presets under `pretrain`, no recipe (and no torch) imported for `muppets --help`."""

import dataclasses
import subprocess
import sys

import pytest

from muppets.cli.main import COMMANDS, main, parse_command, select
from muppets.errors import InputError


def test_every_command_names_a_config_dataclass_and_a_function():
    for words, command in COMMANDS.items():
        config_cls, run = command.load()
        assert dataclasses.is_dataclass(config_cls) and callable(run), words
    names = [command.file_name for command in COMMANDS.values()]
    assert len(set(names)) == len(names) == 17  # one resolved-config file name per command
    assert COMMANDS["predict fill-mask"].file_name == "fill-mask"
    assert COMMANDS["tokenizer train"].file_name == "tokenizer-train"


def test_help_imports_no_recipe_and_no_torch():
    code = (
        "import sys\nfrom muppets.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('muppets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.splitlines()[-1]
        == "['muppets', 'muppets.cli', 'muppets.cli.main', 'muppets.errors']"
    )
    assert "predict fill-mask  print the top-k tokens" in out.stdout


def test_the_longest_command_words_win():
    assert select(["predict", "fill-mask", "a [MASK] ."]) == (
        COMMANDS["predict fill-mask"],
        ["a [MASK] ."],
    )
    assert select(["predict", "--model", "m"]) == (COMMANDS["predict"], ["--model", "m"])
    assert select(["tokenizer", "train", "--out", "x"])[1] == ["--out", "x"]
    assert select(["tokenizer"]) is None and select(["train"]) is None


def test_a_negative_number_in_exponent_form_is_a_value_not_an_option():
    _, args = parse_command(["evaluate", "--null-threshold", "-1e6", "--model", "-1e6"])
    assert (args.null_threshold, args.model) == (-1e6, "-1e6")
    _, args = parse_command(["evaluate", "--null-threshold", "-1.5", "--model", "m"])
    assert args.null_threshold == -1.5  # argparse's own negative numbers are untouched


def test_unknown_or_missing_commands_list_the_valid_ones(capsys):
    for argv in (["tokenizer"], ["pretrian"], []):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'tokenizer' (commands: tokenizer train, prepare, pretrain," in err
    assert "unknown command 'pretrian'" in err and "a command is required" in err


def test_pretrain_with_an_elmo_preset_runs_pretrain_elmo(tmp_path):
    """The resolved model decides, as build_config resolves it: flag > --set > --config."""
    elmo_toml, bert_toml = tmp_path / "elmo.toml", tmp_path / "bert.toml"
    elmo_toml.write_text('model = "elmo-small"\n')
    bert_toml.write_text('model = "bert-mini"\n')
    base = ["pretrain", "--train-data", "x"]
    cases = {
        ("--model", "elmo-tiny"): "pretrain-elmo",
        ("--model=elmo-tiny",): "pretrain-elmo",
        ("--set", "model=elmo-tiny"): "pretrain-elmo",
        ("--config", str(elmo_toml)): "pretrain-elmo",
        ("--config", str(elmo_toml), "--model", "bert-mini"): "pretrain",
        ("--config", str(bert_toml), "--set", "model=elmo-tiny"): "pretrain-elmo",
        ("--set", "model=elmo-tiny", "--model", "bert-tiny"): "pretrain",
        ("--model", "bert-mini"): "pretrain",
        (): "pretrain",
    }
    for extra, words in cases.items():
        command, args = parse_command([*base, *extra])
        assert command.words == words, extra
    # ELMo's own options (a list of text files, --window) parse once the route is taken
    elmo = ["pretrain", "--model", "elmo-tiny", "--train-data", "a", "b", "--window", "10"]
    command, args = parse_command(elmo)
    assert command.words == "pretrain-elmo" and args.train_data == ["a", "b"] and args.window == 10


def test_help_is_the_help_of_the_command_that_runs(capsys):
    for argv, usage in (
        (["pretrain", "--model", "elmo-tiny", "--help"], "usage: muppets pretrain-elmo "),
        (["pretrain", "--model", "transfo-xl-tiny", "--help"], "usage: muppets pretrain-lm "),
        (["pretrain", "--help"], "usage: muppets pretrain "),
        (["predict", "fill-mask", "-h"], "usage: muppets predict fill-mask "),
    ):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 0 and capsys.readouterr().out.startswith(usage), argv


def test_elmo_options_without_an_elmo_model_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        parse_command(["pretrain", "--model", "bert-tiny", "--window", "10"])
    assert exit.value.code == 2
    assert "muppets pretrain: error: unrecognized arguments: --window 10" in capsys.readouterr().err


def test_a_missing_config_file_is_one_line_or_with_debug_a_traceback(tmp_path, capsys):
    missing = tmp_path / "missing.toml"
    assert main(["pretrain", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == f"muppets: error: {missing}: config file not found\n"
    for argv in (["--debug", "pretrain"], ["pretrain", "--debug"]):  # either place
        with pytest.raises(InputError, match="config file not found"):
            main([*argv, "--config", str(missing)])
