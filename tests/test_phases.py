"""Pretraining in phases ([[phases]]): weights carried over exactly, a fresh optimizer and
schedule per phase, the phase in every metrics record, bitwise resume inside a phase, and the
bad configs refused in one line before any training."""

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.args import add_config_flags, build_config
from muppets.cli.main import main
from muppets.recipes.pretrain import Phase, PretrainConfig
from muppets.recipes.pretrain import run as recipe
from muppets.training.options import from_options
from muppets.training.pretrained import resolve_checkpoint

SAMPLE = Path(__file__).resolve().parents[1] / "muppets" / "samples"

# Phase 1: 3 steps at 32 tokens, 8 per step; phase 2: 4 steps at 64 tokens, 4 per step.
TOML = """
model = "bert-tiny"
max_seq_length = 64
batch_size = 8
micro_batch_size = 4
partitions = 2
learning_rate = 1e-3
warmup_steps = 2
log_every = 1
eval_every = 0
save_every = 2
eval_instances = 8

[[phases]]
max_steps = 3
max_seq_length = 32

[[phases]]
max_steps = 4
batch_size = 4
"""


def prepare(root: Path, vocab_size: int) -> Path:
    tok = str(root / f"tok-{vocab_size}")
    train = ["--inputs", str(SAMPLE / "wiki.train.txt"), "--out", tok]
    assert main(["tokenizer", "train", *train, "--vocab-size", str(vocab_size)]) == 0
    for split in ("train", "valid"):
        args = ["prepare", "--inputs", str(SAMPLE / f"wiki.{split}.txt"), "--tokenizer", tok]
        assert main([*args, "--out", str(root / f"{split}-{vocab_size}")]) == 0
    return root


def write_config(path: Path, shards: Path, text: str = TOML) -> Path:
    data = f'train_data = "{shards / "train-2000"}"\nvalid_data = "{shards / "valid-2000"}"\n'
    path.write_text(data + text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("phases"), 2000)


@pytest.fixture(scope="module")
def straight(shards, tmp_path_factory):
    """The two phases uninterrupted, with what each call of train() started from."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("straight")
    config, out = write_config(root / "phases.toml", shards), root / "run"
    started = []

    def recording_train(model, *args, resume=False, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        started.append({"weights": weights, "resume": resume})
        return real_train(model, *args, resume=resume, **kwargs)

    real_train = recipe.train
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "train", recording_train)
        assert main(["pretrain", "--config", str(config), "--out", str(out)]) == 0
    return out, config, started


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(resolve_checkpoint(run) / "model.safetensors")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_phase_two_starts_from_phase_one_final_weights_with_a_fresh_optimizer(straight):
    out, _, started = straight
    assert [s["resume"] for s in started] == [False, False]
    phase_one = load_file(out / "phase-1" / "checkpoints" / "step-00000003" / "model.safetensors")
    initial = started[1]["weights"]
    assert phase_one.keys() == initial.keys()
    assert all(torch.equal(phase_one[k], initial[k]) for k in phase_one)
    assert not torch.equal(
        phase_one["encoder.embeddings.word_embeddings.weight"],
        started[0]["weights"]["encoder.embeddings.word_embeddings.weight"],
    )
    # AdamW's step count in phase 2's last checkpoint is phase 2's own: 4, not 3 + 4
    last = out / "phase-2" / "checkpoints" / "step-00000004"
    steps = {float(v) for k, v in load_file(last / "optimizer.safetensors").items() if "step" in k}
    assert steps == {4.0}
    # The run directory stands for the last phase's final checkpoint (fine-tune, fill-mask)
    assert resolve_checkpoint(out) == last


def test_every_record_carries_its_phase_and_the_schedule_restarts(straight):
    out, _, _ = straight
    train = [r for r in records(out) if r["event"] == "train"]
    assert [(r["phase"], r["phase_step"], r["step"]) for r in train] == [
        (1, 1, 1),
        (1, 2, 2),
        (1, 3, 3),
        (2, 1, 4),
        (2, 2, 5),
        (2, 3, 6),
        (2, 4, 7),
    ]
    assert all("phase" in r for r in records(out))
    # warmup 2 then linear decay, each phase over its own length: warmup again in phase 2
    assert [r["lr"] for r in train] == pytest.approx([5e-4, 1e-3, 1e-3] + [5e-4, 1e-3, 1e-3, 5e-4])
    phase_one = json.loads((out / "phase-1" / "result.json").read_text())
    assert phase_one["phase"] == 1 and phase_one["step"] == 3
    options = phase_one["config"]
    assert (options["max_seq_length"], options["max_predictions_per_seq"]) == (32, math.ceil(4.8))
    result = json.loads((out / "result.json").read_text())
    assert result["phase"] == 2 and result["step"] == 4
    assert [p["step"] for p in result["phases"]] == [3, 4]
    assert result["checkpoint"].endswith("phase-2/checkpoints/step-00000004")
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pretrain.toml").read_text().count("[[phases]]") == 2


def test_the_resolved_config_reads_back_the_same(straight):
    out, config, _ = straight
    parser = argparse.ArgumentParser()
    add_config_flags(parser, PretrainConfig)
    given = build_config(PretrainConfig, parser.parse_args(["--config", str(config)]))
    saved = build_config(
        PretrainConfig, parser.parse_args(["--config", str(out / "pretrain.toml")])
    )
    assert (
        saved.phases
        == given.phases
        == [
            Phase(max_steps=3, max_seq_length=32),
            Phase(max_steps=4, batch_size=4),
        ]
    )


@pytest.mark.parametrize("kill", ["inside_phase_two", "before_phase_two_saved"])
def test_resume_gives_the_uninterrupted_weights_bitwise(straight, tmp_path, kill):
    out, config, _ = straight
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "result.json").unlink()
    (run / "phase-2" / "result.json").unlink()
    if kill == "inside_phase_two":  # killed at step 3 of phase 2: step 2 is its newest
        shutil.rmtree(run / "phase-2" / "checkpoints" / "step-00000004")
    else:  # killed after phase 1, before phase 2 saved anything (its metrics are stale)
        shutil.rmtree(run / "phase-2" / "checkpoints")
    assert main(["pretrain", "--config", str(config), "--out", str(run), "--resume"]) == 0
    a, b = final_weights(out), final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(directory):
        return [
            (r["phase"], r["step"], r["loss"]) for r in records(directory) if r["event"] == "train"
        ]

    assert losses(run) == losses(out)


# ---------------------------------------------------------------- bad input


def refused(capsys, shards, tmp_path, text: str) -> str:
    config = write_config(tmp_path / "bad.toml", shards, text)
    capsys.readouterr()
    code = main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("muppets: error: ")
    assert not (tmp_path / "run" / "phase-1" / "checkpoints").exists()  # nothing trained
    return err[0]


def test_an_unknown_key_in_a_phase_is_named(shards, tmp_path, capsys):
    line = refused(capsys, shards, tmp_path, TOML + "foo = 1\n")
    assert "unknown config key 'phases[2].foo'" in line and "bad.toml" in line


def test_a_value_of_the_wrong_type_in_a_phase_is_named(shards, tmp_path, capsys):
    text = TOML.replace("max_seq_length = 32", 'max_seq_length = "short"')
    assert "phases[1].max_seq_length must be int" in refused(capsys, shards, tmp_path, text)


def test_a_phase_longer_than_the_position_table(shards, tmp_path, capsys):
    line = refused(capsys, shards, tmp_path, TOML + "max_seq_length = 1024\n")
    assert "phases[2].max_seq_length 1024 is longer than model 'bert-tiny'" in line
    assert "512 positions" in line


def test_shares_must_add_up_to_one(shards, tmp_path, capsys):
    text = TOML.replace("max_steps = 3", "share = 0.6").replace("max_steps = 4", "share = 0.3")
    line = refused(capsys, shards, tmp_path, "max_steps = 10\n" + text)
    assert "phases[].share must add up to 1, got 0.6 + 0.3 = 0.9" in line


def test_share_and_max_steps_are_not_mixed(shards, tmp_path, capsys):
    text = TOML.replace("max_steps = 3", "share = 1.0")
    line = refused(capsys, shards, tmp_path, text)
    assert "phases[2] must give share as phases[1] does" in line
    both = TOML.replace("max_steps = 3", "max_steps = 3\nshare = 1.0")
    assert "phases[1] must give one of share or max_steps" in refused(
        capsys, shards, tmp_path, both
    )


def test_max_steps_phases_under_a_time_budget_are_refused(shards, tmp_path, capsys):
    line = refused(capsys, shards, tmp_path, 'time_budget = "1m"\n' + TOML)
    assert "phases[1].max_steps with time_budget" in line


def test_a_vocabulary_change_between_phases(shards, tmp_path, capsys):
    prepare(tmp_path, 1500)
    text = TOML + f'train_data = "{tmp_path / "train-1500"}"\n'
    line = refused(capsys, shards, tmp_path, text)
    assert "phases[2].train_data" in line and "another tokenizer" in line


def test_shares_split_the_budget_and_the_step_cap():
    config = from_options(
        PretrainConfig,
        train_data="shards",
        out="runs/x",
        max_steps=1000,
        time_budget="30m",
        max_seq_length=128,
        masked_lm_prob=0.4,
        max_predictions_per_seq=52,
        phases=[{"share": 0.6, "max_seq_length": 32}, Phase(share=0.4, warmup_steps=5)],
    )
    one, two = config.phase_configs()
    assert (one.run.time_budget, one.run.max_steps, one.max_predictions_per_seq) == (
        "1080.000s",
        600,
        13,
    )
    assert (two.run.time_budget, two.run.max_steps, two.max_predictions_per_seq) == (
        "720.000s",
        400,
        52,
    )
    assert (one.out, two.out, two.init_from) == ("runs/x/phase-1", "runs/x/phase-2", one.out)
    assert two.optimization.warmup_steps == 5 and two.optimization.warmup_ratio is None


def test_a_phase_batch_that_the_processes_cannot_share(shards, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe.dist, "world_size", lambda: 2)  # checked before phase 1 trains
    line = refused(capsys, shards, tmp_path, TOML)
    assert "phases[2]: batch_size 4 is not a multiple of micro_batch_size 4 x 2 processes" in line
