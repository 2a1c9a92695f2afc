"""ELMo pretraining recipe: CLI run on the sample, reload, learning, resume, the non-ELMo error."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.errors import ConfigError, InputError
from muppets.models.bert import BertConfig
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig, pretrain_elmo
from muppets.training.logging import read_metrics
from muppets.training.options import from_options
from muppets.training.pretrained import load_elmo

SAMPLES = Path(__file__).resolve().parents[1] / "muppets" / "samples"
REPEATED = "the cat sat on the mat . the dog ate the bone .\n" * 40  # 11 words, 13 with <S> </S>


def test_cli_run_on_the_sample_writes_a_checkpoint_that_load_elmo_reloads(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--model", "elmo-tiny", "--train-data", str(SAMPLES / "wiki.train.txt")]
    argv += ["--valid-data", str(SAMPLES / "wiki.valid.txt"), "--out", str(out)]
    argv += ["--max-steps", "3", "--warmup-steps", "0", "--window", "10", "--batch-size", "4"]
    argv += ["--micro-batch-size", "4", "--eval-windows", "16", "--threads", "1"]
    assert main(argv) == 0  # `pretrain --model elmo-*` runs pretrain-elmo
    assert "pretrain-elmo: 3 steps" in capsys.readouterr().out
    assert (out / "pretrain-elmo.toml").is_file() and (out / "loss.png").is_file()

    result = json.loads((out / "result.json").read_text())
    assert result["perplexity"] == pytest.approx(math.exp(result["eval"]["lm_loss"]))
    assert 25 < result["perplexity"] < 100  # about the 50 words of elmo-tiny's vocabulary
    assert result["valid_targets"] == 2 * 16 * 10 - 1  # no backward target for the first <S>
    assert result["corpus"]["empty_sentences"] == 0 and result["corpus"]["sentences"] > 10_000
    assert result["vocabulary"]["size"] == 50

    checkpoint = out / "checkpoints" / "step-00000003"
    model, config, vocabulary = load_elmo(out)  # a run directory: its newest checkpoint
    assert not model.training and config.vocab_size == len(vocabulary) == 50
    assert json.loads((checkpoint / "config.json").read_text()) == config.to_dict()
    assert config.to_dict()["model_type"] == "elmo"
    saved = load_file(checkpoint / "model.safetensors")
    state = model.state_dict()
    assert saved.keys() == state.keys()  # ElmoBiLM's names, no wrapper prefix
    assert all(torch.equal(saved[k], state[k]) for k in state)
    assert vocabulary.tokens[:4] == ["<PAD>", "<S>", "</S>", "<UNK>"]
    assert vocabulary.tokens[4] == "the"  # most frequent first


def run(tmp_path, name, **overrides) -> Path:
    text = tmp_path / "repeated.txt"
    text.write_text(REPEATED)
    values = dict(
        train_data=[str(text)],
        out=str(tmp_path / name),
        model="elmo-tiny",
        window=10,
        batch_size=8,
        micro_batch_size=4,
        warmup_steps=0,
        log_every=1,
        eval_every=0,
        save_every=0,
        shuffle_windows=0,
        threads=1,
    )
    values.update(overrides)
    pretrain_elmo(from_options(ElmoPretrainConfig, **values))
    return Path(values["out"])


def test_loss_goes_down_on_a_repeated_text(tmp_path):
    out = run(tmp_path, "run", max_steps=20, learning_rate=0.03, schedule="constant")
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["event"] == "train"]
    assert len(losses) == 20
    assert losses[0] == pytest.approx(math.log(13), abs=0.05)  # uniform over 13 words at init
    assert losses[-1] < 1.2 and losses[-1] < min(losses[:10]) - 1.0


def test_resumed_run_equals_uninterrupted(tmp_path):
    # constant: a linear decay would depend on the first part's max_steps
    options = dict(max_steps=6, learning_rate=0.01, schedule="constant", save_every=3)
    options.update(dropout=0.2, shuffle_windows=3)  # RNG and window order are restored too
    whole = run(tmp_path, "whole", **options)
    run(tmp_path, "parts", **{**options, "max_steps": 3})
    parts = run(tmp_path, "parts", **{**options, "resume": True})
    a = load_file(whole / "checkpoints" / "step-00000006" / "model.safetensors")
    b = load_file(parts / "checkpoints" / "step-00000006" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_not_an_elmo_checkpoint_is_a_clear_error(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        json.dumps(BertConfig(hidden_size=16, num_attention_heads=2).to_dict())
    )
    with pytest.raises(InputError, match="config.json: has model_type 'bert', not 'elmo'"):
        load_elmo(bert)
    (bert / "config.json").write_text("{}")
    with pytest.raises(InputError, match="has no model_type, not 'elmo'"):
        load_elmo(bert)
    with pytest.raises(InputError, match="not a checkpoint"):
        load_elmo(tmp_path)


def test_config_errors_name_the_field(capsys):
    with pytest.raises(ConfigError, match="unknown ELMo preset 'elmo-huge'.*elmo-tiny"):
        ElmoPretrainConfig(train_data=["x"], model="elmo-huge")
    with pytest.raises(ConfigError, match="batch_size must be a multiple of micro_batch_size"):
        from_options(ElmoPretrainConfig, train_data=["x"], batch_size=48, micro_batch_size=32)
    assert main(["pretrain-elmo", "--train-data", "missing.txt", "--out", "/nonexistent/x"]) == 2
