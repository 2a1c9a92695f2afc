"""Checkpoint directories: save -> load is identity, ties survive, bad files fail clearly."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_loop import CONFIG, ToyMLM, ToyObjective, make_batch
from torch import nn

from muppets.errors import InputError
from muppets.training import checkpoint as ckpt
from muppets.training.optim import build_optimizer


def trained_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW after three steps on the toy objective, so every state tensor is non-trivial."""
    optimizer = build_optimizer(model, learning_rate=1e-2)
    for i in range(3):
        sums = ToyObjective()(model, make_batch(i))
        (sums["mlm"] + sums["nsp"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_save_then_load_is_identity_and_keeps_the_tie(tmp_path):
    model, other = ToyMLM(seed=1), ToyMLM(seed=2)
    tokenizer = tmp_path / "vocab.txt"
    tokenizer.write_text("[PAD]\n[UNK]\n")
    directory = ckpt.save_pretrained(tmp_path / "model", model, CONFIG, extra_files=[tokenizer])
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    assert ckpt.read_config(directory) == CONFIG
    with safe_open(directory / "model.safetensors", "pt") as f:  # the tied matrix is stored once
        assert "decoder.weight" not in f.keys() and "embeddings.weight" in f.keys()
        assert json.loads(f.metadata()["aliases"]) == {"decoder.weight": "embeddings.weight"}

    ckpt.load_weights(other, directory)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert other.decoder.weight is other.embeddings.weight
    with torch.no_grad():
        other.embeddings.weight[0, 0] = 42.0
    assert other.decoder.weight[0, 0] == 42.0


def test_tensors_sharing_memory_without_a_tie_are_saved_as_copies(tmp_path):
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.arange(12.0).reshape(3, 4))
            self.register_buffer("transposed", self.weight.detach().t())  # same memory, a view

    ckpt.save_pretrained(tmp_path, Views(), {})
    target = Views()
    with torch.no_grad():
        target.weight.zero_()
        target.transposed.zero_()  # a buffer is copied into, so it stays a view of weight
    ckpt.load_weights(target, tmp_path)
    assert torch.equal(target.weight, torch.arange(12.0).reshape(3, 4))
    assert torch.equal(target.transposed, target.weight.t())


def test_truncated_weights_are_an_input_error_naming_the_file(tmp_path):
    ckpt.save_pretrained(tmp_path, ToyMLM(), CONFIG)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(InputError) as error:
        ckpt.load_weights(ToyMLM(), tmp_path)
    assert error.value.path == str(weights)
    assert str(error.value).startswith(f"{weights}: cannot read safetensors file")


def test_missing_config_and_mismatched_keys_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="missing config.json") as error:
        ckpt.read_config(tmp_path)
    assert error.value.path == str(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"hidden_size": 8,\n oops}')
    with pytest.raises(InputError) as error:
        ckpt.read_config(tmp_path)
    assert error.value.line == 2

    class Bigger(ToyMLM):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)

    ckpt.save_pretrained(tmp_path / "toy", ToyMLM(), CONFIG)
    with pytest.raises(InputError, match="missing extra.weight, extra.bias; unexpected none"):
        ckpt.load_weights(Bigger(), tmp_path / "toy")
    ckpt.save_pretrained(tmp_path / "big", Bigger(), CONFIG)
    with pytest.raises(InputError, match="missing none; unexpected extra.bias, extra.weight"):
        ckpt.load_weights(ToyMLM(), tmp_path / "big")


def test_changed_model_config_names_the_fields(tmp_path):
    ckpt.save_pretrained(tmp_path, ToyMLM(), {**CONFIG, "dims": (1, 2)})
    ckpt.check_config(tmp_path, {**CONFIG, "dims": (1, 2)})  # tuples saved as lists still match
    with pytest.raises(InputError) as error:
        ckpt.check_config(tmp_path, {"vocab_size": 12, "hidden_size": 8, "dims": (1, 2)})
    assert "vocab_size (checkpoint 11, now 12)" in str(error.value)
    assert "hidden_size" not in str(error.value)


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    model = ToyMLM()
    optimizer = trained_optimizer(model)
    saved = ckpt.save_optimizer(optimizer, model, tmp_path / "optimizer.safetensors")
    saved = json.loads(json.dumps(saved))  # as it is stored in trainer_state.json
    assert saved["param_groups"][0]["params"] == ["embeddings.weight", "nsp.weight"]

    fresh = ToyMLM(seed=3)
    restored = build_optimizer(fresh, learning_rate=1e-2)
    ckpt.load_optimizer(restored, fresh, tmp_path / "optimizer.safetensors", saved)
    a, b = optimizer.state_dict(), restored.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, state in a["state"].items():
        for key, tensor in state.items():
            assert torch.equal(tensor, b["state"][index][key]), (index, key)


def test_rng_states_round_trip_through_json():
    state = json.loads(json.dumps(ckpt.rng_state()))
    draws = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_a_crash_mid_save_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    model = ToyMLM()
    optimizer = trained_optimizer(model)
    state = {"step": 1, "ranks": []}
    ckpt.save_checkpoint(tmp_path, 1, model, CONFIG, optimizer, state)

    def crash(model, path):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, model, CONFIG, optimizer, {"step": 2, "ranks": []})
    assert (tmp_path / "step-00000002.tmp").is_dir()
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["step-00000001"]
    reloaded = ToyMLM(seed=4)
    ckpt.load_weights(reloaded, tmp_path / "step-00000001")
    assert torch.equal(reloaded.nsp.weight, model.nsp.weight)


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model = ToyMLM()
    optimizer = trained_optimizer(model)
    for step in (1, 2, 10):
        ckpt.save_checkpoint(tmp_path, step, model, CONFIG, optimizer, {"ranks": []}, keep=2)
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["step-00000002", "step-00000010"]


def test_rank_states_follow_the_world_size(tmp_path):
    state = {"ranks": [{"data": {"shard": 0}, "rng": "r0"}, {"data": {"shard": 1}, "rng": "r1"}]}
    assert ckpt.rank_state(state, 1, 2, tmp_path) == {"data": {"shard": 1}, "rng": "r1"}
    with pytest.raises(InputError, match="resume with 2 processes, not 1"):
        ckpt.rank_state(state, 0, 1, tmp_path)
    shared = {"ranks": [{"data": {"step": 5}, "rng": "r0"}, {"data": {"step": 5}, "rng": "r1"}]}
    assert ckpt.rank_state(shared, 0, 4, tmp_path) == {"data": {"step": 5}, "rng": None}


@pytest.mark.parametrize(
    "state, message",
    [
        ({"step": 3}, 'no "ranks" list'),
        ({"ranks": []}, 'no "ranks" list'),
        ({"ranks": [{"data": {}}]}, '"ranks"\\[0\\] must be an object with "data" and "rng"'),
    ],
)
def test_a_trainer_state_without_ranks_names_the_file(tmp_path, state, message):
    with pytest.raises(InputError, match=message) as error:
        ckpt.rank_state(state, 0, 1, tmp_path)
    assert error.value.path == str(tmp_path / "trainer_state.json")
    assert str(error.value).startswith(f"{tmp_path / 'trainer_state.json'}: ")
