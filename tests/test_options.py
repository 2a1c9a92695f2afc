"""Recipe options: each shared option declared once (training/options.py), flat on the command
line and in TOML files, resolved in order, written back whole; fine-tuning's own dropout."""

import argparse
import dataclasses
import tomllib

import pytest
import torch
from torch import nn

from muppets.cli.args import add_config_flags, build_config, config_to_toml
from muppets.errors import ConfigError
from muppets.models.layers import SelfAttention
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.recipes.convert import ConvertConfig
from muppets.recipes.evaluate import EvaluateConfig, PredictConfig
from muppets.recipes.extract import ExtractConfig
from muppets.recipes.fill_mask import FillMaskConfig
from muppets.recipes.finetune.encoder import load_encoder
from muppets.recipes.finetune.run import FinetuneConfig
from muppets.recipes.pretrain import PretrainConfig
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig
from muppets.training.checkpoint import save_pretrained
from muppets.training.options import (
    Optimization,
    flat_fields,
    flat_options,
    from_options,
    group,
    option,
)

RECIPES = [
    PretrainConfig,
    ElmoPretrainConfig,
    FinetuneConfig,
    EvaluateConfig,
    PredictConfig,
    ExtractConfig,
    ConvertConfig,
    FillMaskConfig,
]


def resolve(cls, argv: list[str]):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls)
    return build_config(cls, parser.parse_args(argv))


@pytest.mark.parametrize("cls", RECIPES, ids=lambda c: c.__name__)
def test_every_option_has_one_flat_name_and_a_help_text(cls):
    options = flat_fields(cls)  # raises on a name declared twice
    assert all(field.metadata.get("help") for _, _, field, _ in options.values())


def test_shared_options_are_declared_once_with_per_recipe_defaults():
    def default(cls, name):
        return flat_fields(cls)[name][3]

    # the same declaration (the Optimization group's), three recipes' defaults
    for cls in (PretrainConfig, ElmoPretrainConfig):
        assert flat_fields(cls)["learning_rate"][1] is Optimization
    # fine-tuning retypes the rate to take a list of candidates; its rules stay Optimization's
    assert issubclass(flat_fields(FinetuneConfig)["learning_rate"][1], Optimization)
    assert [default(c, "learning_rate") for c in (PretrainConfig, ElmoPretrainConfig)] == [
        1e-4,
        1e-3,
    ]
    assert default(FinetuneConfig, "learning_rate") is None  # by the encoder's size
    assert (
        default(ElmoPretrainConfig, "max_grad_norm"),
        default(PretrainConfig, "max_grad_norm"),
    ) == (10.0, 1.0)
    assert (
        default(FinetuneConfig, "warmup_ratio") == 0.1
        and default(PretrainConfig, "warmup_ratio") is None
    )

    # a recipe declaring a group's option again is refused
    @dataclasses.dataclass
    class Twice:
        optimization: Optimization = group(Optimization)
        learning_rate: float = option("again", 1.0)

    with pytest.raises(TypeError, match="'learning_rate' is declared twice"):
        flat_fields(Twice)


def test_flags_toml_and_set_resolve_flat_names_into_groups(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'train_data = "shards"\nlearning_rate = 1e-3\nwarmup_steps = 4\nlog_every = 7\n'
        "max_steps = 30\n"
        "[run]\neval_every = 5\n"
    )
    config = resolve(
        PretrainConfig,
        [
            "--config",
            str(toml),
            "--set",
            "log_every=9",
            "--max-steps",
            "40",
            "--micro-batch-size",
            "16",
        ],
    )
    assert config.optimization.learning_rate == 1e-3  # TOML
    assert config.logging.log_every == 9  # --set over TOML
    assert config.run.max_steps == 40 and config.run.eval_every == 5  # flag over TOML; [run] table
    assert config.batches.micro_batch_size == 16 and config.batches.batch_size == 128
    assert config.optimization.weight_decay == 0.01  # the default, untouched
    train = config.train_config(8)
    assert (train.learning_rate, train.log_every, train.max_steps, train.eval_every) == (
        1e-3,
        9,
        40,
        5,
    )
    assert train.gradient_accumulation_steps == 8


def test_elmo_defaults_reach_the_loop():
    train = ElmoPretrainConfig(train_data=["x"]).train_config(1)
    assert (train.learning_rate, train.weight_decay, train.max_grad_norm) == (1e-3, 0.0, 10.0)
    assert (train.warmup_steps, train.max_steps, train.seed) == (200, 5_000, 0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "learnig_rate=1"], "--set learnig_rate=1: unknown key 'learnig_rate'"),
        (["--learning-rate", "0"], "learning_rate must be > 0, got 0.0"),
        (["--warmup-ratio", "1.5"], "warmup_ratio must be in [0, 1), got 1.5"),
        (["--batch-size", "48"], "batch_size must be a multiple of micro_batch_size, got 48"),
        (["--time-budget", "soon"], "soon"),
    ],
)
def test_bad_values_name_the_option(argv, message):
    with pytest.raises(ConfigError) as error:
        resolve(PretrainConfig, ["--train-data", "x", *argv])
    assert message in str(error.value)


def test_unknown_toml_keys_name_the_key_and_the_file(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('train_data = "x"\nlearning_rat = 1e-3\n')
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat'") as error:
        resolve(PretrainConfig, ["--config", str(toml)])
    assert str(toml) in str(error.value)
    toml.write_text('train_data = "x"\n[optimization]\nlog_every = 3\n')  # not that group's
    with pytest.raises(ConfigError, match="unknown config key 'optimization.log_every'"):
        resolve(PretrainConfig, ["--config", str(toml)])


def test_the_resolved_toml_holds_every_value_and_reads_back(tmp_path):
    # fine-tuning's rate and epochs are listable: "1e-4" from the command line is one number
    config = from_options(FinetuneConfig, task="sst2", model="m", learning_rate="1e-4", epochs="5")
    text = config_to_toml(config)
    values = tomllib.loads(text)
    expected = {k: v for k, v in flat_options(config).items() if v is not None}
    assert values == expected and values["learning_rate"] == 1e-4 and values["epochs"] == 5
    assert values["dropout"] == 0.1 and values["early_stopping_patience"] == 2
    path = tmp_path / "finetune.toml"
    path.write_text(text)
    assert resolve(FinetuneConfig, ["--config", str(path)]) == config


def test_the_downstream_path_refuses_the_encoder_learning_rate():
    with pytest.raises(ConfigError, match="--downstream-learning-rate"):
        from_options(
            FinetuneConfig, task="sst2", model="m", downstream="bilstm", learning_rate=1e-3
        )


# ---------------------------------------------------------------- fine-tuning's dropout


def dropouts(encoder: nn.Module) -> tuple[set[float], set[float]]:
    """(hidden rates of the nn.Dropout modules, attention rates of the SelfAttention modules)"""
    hidden = {m.p for m in encoder.modules() if isinstance(m, nn.Dropout)}
    attention = {m.dropout for m in encoder.modules() if isinstance(m, SelfAttention)}
    return hidden, attention


def test_fine_tuning_sets_its_own_dropout_whatever_the_checkpoints(tmp_path, tiny_tokenizer):
    model_config = preset_config(
        "bert-tiny",
        vocab_size=tiny_tokenizer.vocab_size,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    pretrained = build_pretraining_model(model_config)
    save_pretrained(tmp_path / "ckpt", pretrained, model_config.to_dict())
    tiny_tokenizer.save(tmp_path / "ckpt")
    assert dropouts(pretrained.encoder) == ({0.0}, {0.0})

    base = ["--task", "sst2", "--model", str(tmp_path / "ckpt")]
    for argv, rate in ((base, 0.1), ([*base, "--dropout", "0.05"], 0.05)):
        config = resolve(FinetuneConfig, argv)
        encoder, built = load_encoder(config, tiny_tokenizer, 64)
        assert dropouts(encoder) == ({rate}, {rate})
        assert (built.hidden_dropout_prob, built.attention_probs_dropout_prob) == (rate, rate)
        # the weights are the checkpoint's, untouched
        weights = pretrained.encoder.state_dict()
        assert all(torch.equal(v, weights[k]) for k, v in encoder.state_dict().items())

    # a preset from scratch gets the same rate
    scratch = from_options(FinetuneConfig, task="sst2", model="bert-tiny", dropout=0.05)
    encoder, _ = load_encoder(scratch, tiny_tokenizer, 64)
    assert dropouts(encoder) == ({0.05}, {0.05})
    with pytest.raises(ConfigError, match="dropout must be in"):
        from_options(FinetuneConfig, task="sst2", model="m", dropout=1.0)


def test_a_toml_number_is_read_for_a_listable_option(tmp_path):
    path = tmp_path / "finetune.toml"
    path.write_text('task = "sst2"\nmodel = "m"\nlearning_rate = 3e-4\nepochs = 4\n')
    config = resolve(FinetuneConfig, ["--config", str(path)])
    assert (config.optimization.learning_rate, config.run.epochs) == (3e-4, 4)
