"""Divergence is caught before NaN: a loss far above the run's level stops the run in one line
naming the step, the newest sane checkpoint (kept out of the rotation) and the flag to restart
from it; no checkpoint holds the refused update; fill-mask, extract and predict refuse a model
whose outputs are not finite."""

import math
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from muppets.cli.main import main
from muppets.errors import InputError
from muppets.tasks.prediction import predict
from muppets.tasks.registry import read_split, task_spec
from muppets.tasks.setup import TaskSetup
from muppets.training.checkpoint import checkpoints
from muppets.training.guard import LossGuard


def test_a_spike_over_the_level_stops_and_a_slow_climb_is_measured_from_the_best_median():
    guard = LossGuard(factor=10.0, window=3)
    for step, loss in enumerate([7.0, 6.0, 5.0, 9.0, 20.0, 45.0]):
        assert guard.check(step, loss, 1.0) is None
    assert guard.level() == 6.0  # the lowest median of 3 (7, 6, 5 -> 6); the climb does not move it
    assert guard.check(6, 61.0, 1.0) == "loss 61 is over 10x the run's level 6"
    assert guard.check(6, math.nan, 1.0) == "loss nan, gradient norm 1"
    assert guard.check(6, 2.0, math.inf) == "loss 2, gradient norm inf"


def test_a_fine_tuning_loss_near_zero_is_floored_at_one_nat():
    guard = LossGuard()
    for step in range(5):
        assert guard.check(step, 0.01, 1.0) is None
    assert guard.check(5, 9.9, 1.0) is None  # 990x the level, yet under 10x one nat
    assert guard.check(6, 10.5, 1.0) is not None


def test_the_newest_sane_checkpoint_is_remembered_and_round_trips():
    guard = LossGuard(window=4)
    guard.check(0, 8.0, 1.0)
    assert guard.saved(1, None, keep=2) is None  # pending: measured by the next step's loss
    guard.check(1, 7.0, 1.0)
    assert guard.saved(2, 7.5, keep=2) == 2  # held-out loss, within 2x the level
    guard.check(2, 40.0, 1.0)
    assert guard.saved(3, None, keep=2) == 2
    guard.check(3, 60.0, 1.0)  # checkpoint 3's weights: loss 60, not sane
    assert guard.saved(4, math.nan, keep=2) == 2
    assert sorted(guard.checkpoints) == [2, 3, 4]  # the sane one stays beyond keep=2
    again = LossGuard()
    again.load_state_dict(guard.state_dict())
    assert (again.history, again.lowest, again.checkpoints) == (
        guard.history,
        guard.lowest,
        guard.checkpoints,
    )
    assert again.checkpoints[4] == [math.inf, "held-out"]
    assert again.sane_checkpoint() == (2, 7.5, "held-out")


def run_args(shards, out, learning_rate, *extra):
    return [
        *("pretrain", "--train-data", str(shards / "train"), "--valid-data"),
        *(str(shards / "valid"), "--out", str(out), "--model", "bert-tiny"),
        *("--max-seq-length", "32", "--batch-size", "4", "--micro-batch-size", "4"),
        *("--partitions", "1", "--warmup-steps", "20", "--log-every", "1", "--eval-every", "1"),
        *("--save-every", "1", "--eval-instances", "8", "--learning-rate", learning_rate),
        *extra,
    ]


LINE = re.compile(
    r"muppets: error: step (\d+): loss [\d.e+]+ is over 10x the run's level [\d.]+: diverging, "
    r"stopped before this update; last sane checkpoint: (\S+) \(step (\d+), held-out loss "
    r"[\d.]+\); restart with --init-from (\S+) and a lower --learning-rate"
)


def test_a_diverging_run_stops_with_the_sane_checkpoint_and_restarts_from_it(
    tiny_shards, tmp_path, capsys, one_thread
):
    out = tmp_path / "diverging"
    assert main(run_args(tiny_shards, out, "3", "--max-steps", "40")) == 2
    *bar, last = capsys.readouterr().err.strip().splitlines()  # the progress bar, then one line
    assert all("step/s" in line or "?step" in line for line in bar), bar
    assert (match := LINE.fullmatch(last)), last
    step, sane, sane_step, flag = match.groups()
    assert sane == flag and int(sane_step) < int(step) - 1
    saved = checkpoints(out / "checkpoints")
    assert max(int(p.name[5:]) for p in saved) == int(step) - 1  # nothing after the refused one
    assert str(saved[0]) == sane  # kept although keep_checkpoints is 2
    for directory in saved:
        assert all(
            torch.isfinite(w).all() for w in load_file(directory / "model.safetensors").values()
        )
    again = run_args(
        tiny_shards, tmp_path / "again", "1e-3", "--max-steps", "2", "--warmup-steps", "0"
    )
    assert main([*again, "--init-from", flag]) == 0


def broken_copy(checkpoint, tmp_path):
    """The checkpoint with one weight NaN: what a diverged run would have saved unguarded."""
    import shutil

    target = tmp_path / "broken"
    shutil.copytree(checkpoint, target)
    weights = load_file(target / "model.safetensors")
    name = next(n for n in weights if "embeddings" in n)
    weights[name] = torch.full_like(weights[name], math.nan)
    save_file(weights, target / "model.safetensors")
    return target


def test_fill_mask_and_extract_refuse_non_finite_outputs(tiny_shards, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(run_args(tiny_shards, out, "1e-3", "--max-steps", "1", "--warmup-steps", "0")) == 0
    broken = broken_copy(checkpoints(out / "checkpoints")[-1], tmp_path)
    text = tmp_path / "lines.txt"
    text.write_text("the cat sat .\n", encoding="utf-8")
    capsys.readouterr()
    commands = [
        ["predict", "fill-mask", "the [MASK] sat .", "--model", str(broken)],
        ["extract", "--model", str(broken), "--input", str(text), "--out", str(tmp_path / "f.npz")],
    ]
    for argv in commands:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"muppets: error: {broken}: the model gives "), (
            err
        )
        assert "NaN or infinite" in err[0]
    assert not (tmp_path / "f.npz").exists()


class NanClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, token_type_ids):
        return torch.full((input_ids.shape[0], 2), math.nan) + self.weight


def test_predict_refuses_non_finite_outputs(tmp_path, tiny_tokenizer):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\nthe cat sat .\t1\na dog ran .\t0\n", encoding="utf-8")
    setup = TaskSetup(task="sst2", head="classification", labels=["0", "1"], max_seq_length=16)
    examples = read_split(task_spec("sst2"), path, "dev", setup.labels)
    features = setup.featurize(examples, tiny_tokenizer, labelled=False)
    with pytest.raises(InputError, match="the model gives outputs that are NaN or infinite"):
        predict(NanClassifier(), setup, examples, features, tiny_tokenizer.pad_id)


def test_fine_tuning_names_its_best_model_not_a_checkpoint(tmp_path):
    from muppets.training.loop import TrainConfig, restart_advice
    from muppets.training.state import LoopState, Run

    config = TrainConfig(max_steps=10, warmup_steps=0, best_metric="accuracy")
    run = Run(*[None] * 5, config=config, config_dict={}, out_dir=tmp_path)
    state = LoopState(schedule=None, best={"step": 4, "value": 0.8125})
    assert (
        restart_advice(run, state)
        == f"best model so far: {tmp_path / 'best'} (step 4, accuracy 0.8125)"
    )
    state.best = None
    assert restart_advice(run, state) == "no best model yet (no evaluation before this step)"
