"""Two gloo processes under torchrun train exactly like one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_loop import CONFIG, ToyBatches, ToyMLM, ToyObjective, config, make_batch

from muppets.errors import ConfigError
from muppets.training import distributed
from muppets.training.logging import read_metrics
from muppets.training.loop import train

TESTS = Path(__file__).resolve().parent
# Clipping acts on the synced gradients; the logged grad_norm is taken before it, so a wrong DDP
# loss scale shows there (adam_epsilon=1 makes unclipped updates scale-sensitive too).
SETTINGS = dict(max_steps=3, gradient_accumulation_steps=2, adam_epsilon=1.0, max_grad_norm=0.5)

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
from test_loop import CONFIG, ToyBatches, ToyMLM, ToyObjective, config, make_batch
from muppets.errors import ConfigError
from muppets.training import distributed
from muppets.training.loop import train

torch.set_num_threads(1)
info = distributed.init_distributed(device="cpu")
rows = slice(2 * info.rank, 2 * info.rank + 2)  # this rank's half of every global batch
def eval_batches():
    return [{{k: v[rows] for k, v in make_batch(i).items()}} for i in (100, 101)]
# Rank 1 starts from other weights: DDP must broadcast rank 0's.
model = ToyMLM(seed=info.rank)
train(model, ToyObjective(), ToyBatches(rows=rows), config(**{settings!r}), {out!r},
      config_dict=CONFIG, eval_batches_fn=eval_batches)
distributed.cleanup()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path):
    script = tmp_path / "run.py"
    out = tmp_path / "two"
    script.write_text(SCRIPT.format(tests=str(TESTS), settings=SETTINGS, out=str(out)))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = ToyMLM(seed=0)
        eval_fn = lambda: [make_batch(100), make_batch(101)]  # noqa: E731
        train(
            one,
            ToyObjective(),
            ToyBatches(),
            config(**SETTINGS),
            tmp_path / "one",
            config_dict=CONFIG,
            eval_batches_fn=eval_fn,
        )
    finally:
        torch.set_num_threads(threads)

    final = out / "checkpoints" / "step-00000003"
    two = load_file(final / "model.safetensors")
    for name, param in one.named_parameters():
        assert torch.allclose(two[name], param, atol=1e-6, rtol=0), name
        assert not torch.equal(param, ToyMLM(seed=0).state_dict()[name])  # it did train
    a, b = (read_metrics(d / "metrics.jsonl") for d in (out, tmp_path / "one"))
    assert [(r["event"], r["step"]) for r in a] == [(r["event"], r["step"]) for r in b]
    for ra, rb in zip(a, b, strict=True):  # train losses, tokens, and eval sums over both halves
        for key in ("loss", "loss_mlm", "grad_norm", "tokens", "mlm_loss", "mlm_accuracy"):
            if key in rb:
                assert ra[key] == pytest.approx(rb[key], abs=1e-6), (ra["step"], key)
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert state["ranks"][0]["data"] == state["ranks"][1]["data"] == {"position": 6}
    assert state["ranks"][0]["rng"] != state["ranks"][1]["rng"]  # per-rank dropout streams


def test_a_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.local_rank, info.device.type) == (0, 1, 0, "cpu")
    assert distributed.is_main() and distributed.world_size() == 1
    tensor = torch.tensor([1.5, 2.0])
    assert distributed.all_reduce_sum(tensor) is tensor and tensor.tolist() == [1.5, 2.0]
    assert distributed.all_gather_objects({"position": 3}) == [{"position": 3}]
    model = ToyMLM()
    assert distributed.wrap_ddp(model) is model


def test_a_bad_torchrun_variable_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        distributed.init_distributed(device="cpu")
