"""--precision in the commands: resolved once per run, refused in one line where it cannot pay,
autocast around the forward passes (training, evaluation, inference) over fp32 master weights,
recorded in the run's results and checkpoints, kept by a resume unless told; fp16's GradScaler
skips overflowing steps without the divergence guard taking them for a diverging run."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import BERT_TINY, ELMO_TINY
from safetensors.torch import load_file
from torch import nn

from muppets.cli.main import main
from muppets.errors import ConfigError, TrainingError
from muppets.recipes import evaluate
from muppets.recipes import pretrain_elmo as pretrain_elmo_module
from muppets.recipes.finetune import encoder as finetune_encoder
from muppets.recipes.finetune import features as finetune_features
from muppets.recipes.pretrain import run as pretrain_run
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig
from muppets.training import loop, precision
from muppets.training.checkpoint import checkpoints
from muppets.training.loop import TrainConfig, train
from muppets.training.options import Precision, from_options

pytestmark = pytest.mark.usefixtures("one_thread")

AMX = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile"
NONE = "fpu sse2 avx2 fma f16c"  # an AMD EPYC of this project: no bf16 hardware


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """fake(flags): this process sees a CPU with these flags (/proc/cpuinfo, precision.py's).
    Without a call: one without bf16 hardware."""

    def fake(flags: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: Fake EPYC\nflags\t\t: {flags}\n")
        monkeypatch.setattr(precision, "CPUINFO", path)

    fake(NONE)
    return fake


def linear_dtypes(monkeypatch, module, builder: str) -> list:
    """Record (training?, inference mode?, output dtype) of every nn.Linear the model that
    `module.builder` builds runs."""
    seen, build = [], getattr(module, builder)

    def record(layer, inputs, output):
        seen.append((layer.training, torch.is_inference_mode_enabled(), output.dtype))

    def built(*args, **kwargs):
        made = build(*args, **kwargs)  # a model, or (model, ...) as load_finetuned returns
        model = made[0] if isinstance(made, tuple) else made
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.register_forward_hook(record)
        return made

    monkeypatch.setattr(module, builder, built)
    return seen


# ---------------------------------------------------------------- the setting


def test_auto_follows_the_hardware_and_a_resume_keeps_the_recorded_one(cpu):
    assert Precision().resolve("cpu") == "fp32"
    assert Precision("auto").resolve("cpu", recorded="bf16") == "fp32"  # cannot pay here: anew
    assert Precision("bf16", force_precision=True).resolve("cpu", recorded="fp32") == "bf16"
    cpu(AMX)
    assert Precision().resolve("cpu") == "bf16"
    assert Precision().resolve("cpu", recorded="fp32") == "fp32"  # the run's own, kept
    assert Precision("fp32").resolve("cpu", recorded="bf16") == "fp32"  # told otherwise
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp16"):
        Precision("bfloat16")


PRETRAIN = [
    *("--model", "bert-tiny", "--max-seq-length", "16", "--batch-size", "2"),
    *("--micro-batch-size", "2", "--partitions", "1", "--warmup-steps", "0", "--log-every", "1"),
    *("--eval-every", "0", "--save-every", "1", "--eval-instances", "2"),
]


def pretrain_args(shards, out, *extra):
    data = ["--train-data", str(shards / "train"), "--valid-data", str(shards / "valid")]
    return ["pretrain", *data, "--out", str(out), *PRETRAIN, *extra]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--precision", "bf16"],
            "--precision bf16: this CPU (Fake EPYC: no AMX or avx512_bf16) has no bf16 hardware, "
            "so it would run ~100x slower than fp32; use --precision auto or fp32, or add "
            "--force-precision to run it anyway",
        ),
        (
            ["--precision", "fp16", "--force-precision"],
            "--precision fp16: runs on a GPU only; on the CPU use --precision auto, fp32 or bf16",
        ),
    ],
)
def test_a_precision_that_cannot_pay_is_one_line_before_any_work(
    cpu, tiny_shards, finetune_workspace, tmp_path, cli_error, flags, message
):
    root, checkpoint, _, _ = finetune_workspace
    finetune = ["finetune", "--task", "sst2", "--data", str(root / "glue")]
    finetune += ["--model", str(checkpoint), "--out", str(tmp_path / "ft"), "--device", "cpu"]
    text = tmp_path / "lines.txt"
    text.write_text("the cat sat .\n", encoding="utf-8")
    extract = ["extract", "--model", str(checkpoint), "--input", str(text)]
    commands = [
        pretrain_args(tiny_shards, tmp_path / "pt", "--device", "cpu"),
        finetune,
        [*extract, "--out", str(tmp_path / "f.npz")],
        ["predict", "fill-mask", "the [MASK] sat .", "--model", str(checkpoint)],
    ]
    for argv in commands:
        assert cli_error([*argv, *flags]) == f"muppets: error: {message}"
    assert not (tmp_path / "pt" / "checkpoints").exists() and not (tmp_path / "f.npz").exists()
    assert not (tmp_path / "ft" / "seed-1").exists()


# ---------------------------------------------------------------- training under bf16


def test_forced_bf16_pretraining_autocasts_and_saves_fp32(
    cpu, tiny_shards, tmp_path, capsys, monkeypatch
):
    seen = linear_dtypes(monkeypatch, pretrain_run, "build_pretraining_model")
    out = tmp_path / "run"
    argv = pretrain_args(tiny_shards, out, "--max-steps", "1", "--precision", "bf16")
    assert main([*argv, "--force-precision"]) == 0
    printed = capsys.readouterr().out.splitlines()
    said = "precision: bf16 mixed on cpu (forced; no bf16 hardware: Fake EPYC, ~100x slower)"
    assert printed.count(said) == 1
    # training forward and the held-out evaluation: every matmul of a Linear in bf16
    assert {dtype for _, _, dtype in seen} == {torch.bfloat16}
    assert {training for training, _, _ in seen} == {True, False}
    (saved,) = checkpoints(out / "checkpoints")
    weights = load_file(saved / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}  # master weights: fp32
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["train_config"]["precision"] == "bf16" and "grad_scaler" not in state
    result = json.loads((out / "result.json").read_text())
    assert result["precision"] == "bf16" and result["config"]["precision"] == "bf16"
    assert result["eval"]["loss"] == pytest.approx(result["eval"]["loss"])  # finite


def test_the_default_records_fp32_and_a_resume_keeps_it_unless_told(
    cpu, tiny_shards, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(pretrain_args(tiny_shards, out, "--max-steps", "1")) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "precision: fp32 on cpu (no bf16 hardware: Fake EPYC)"
    state = json.loads((checkpoints(out / "checkpoints")[-1] / "trainer_state.json").read_text())
    assert state["train_config"]["precision"] == "fp32"
    cpu(AMX)  # auto would pick bf16 for a new run here; the resumed run keeps its fp32
    assert main(pretrain_args(tiny_shards, out, "--max-steps", "2", "--resume")) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "precision: fp32 on cpu (AMX present: --precision auto would use bf16)"
    step = out / "checkpoints" / "step-00000002"
    assert [line for line in printed if line.startswith("resume")] == [
        f"resume: step 1 of {out / 'checkpoints' / 'step-00000001'} with max_steps 1 -> 2"
    ]
    argv = pretrain_args(tiny_shards, out, "--max-steps", "3", "--resume", "--precision", "bf16")
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("resume")] == [
        f"resume: step 2 of {step} with max_steps 2 -> 3, precision fp32 -> bf16"
    ]
    state = json.loads((checkpoints(out / "checkpoints")[-1] / "trainer_state.json").read_text())
    assert state["train_config"]["precision"] == "bf16"


def test_forced_bf16_finetuning_scores_dev_in_inference_mode(
    cpu, finetune_workspace, tmp_path, capsys, monkeypatch
):
    seen = linear_dtypes(monkeypatch, finetune_encoder, "build_head")
    root, checkpoint, _, _ = finetune_workspace
    out = tmp_path / "ft"
    argv = ["finetune", "--task", "sst2", "--data", str(root / "glue"), "--model", str(checkpoint)]
    argv += ["--out", str(out), "--epochs", "1", "--device", "cpu", *BERT_TINY]
    assert main([*argv, "--precision", "bf16", "--force-precision"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("precision: bf16 mixed on cpu")
    assert {dtype for _, _, dtype in seen} == {torch.bfloat16}
    # training: autograd on; dev scoring: inference mode, never in training mode
    assert {(training, inference) for training, inference, _ in seen} == {
        (True, False),
        (False, True),
    }
    weights = load_file(out / "seed-1" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    metrics = json.loads((out / "seed-1" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    assert json.loads((out / "summary.json").read_text())["precision"] == "bf16"

    # evaluate in the same precision: bf16 matmuls, inference mode, fine-tuning's dev scores
    seen = linear_dtypes(monkeypatch, evaluate, "load_finetuned")
    argv = ["evaluate", "--model", str(out), "--data", str(root / "glue"), "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "ev"), "--precision", "bf16"]) == 2  # unforced
    capsys.readouterr()
    assert (
        main([*argv, "--out", str(tmp_path / "ev"), "--precision", "bf16", "--force-precision"])
        == 0
    )
    assert {(t, i, dtype) for t, i, dtype in seen} == {(False, True, torch.bfloat16)}
    scores = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert scores["dev"] == metrics["dev"]["dev"]


def test_forced_bf16_extraction_is_close_to_fp32_and_says_so(cpu, finetune_workspace, tmp_path):
    _, checkpoint, _, _ = finetune_workspace
    text = tmp_path / "lines.txt"
    text.write_text("the cat sat .\na dog ran in the park .\n", encoding="utf-8")
    argv = ["extract", "--model", str(checkpoint), "--input", str(text), "--layers", "top"]
    assert main([*argv, "--out", str(tmp_path / "fp32.npz")]) == 0
    assert (
        main(
            [*argv, "--out", str(tmp_path / "bf16.npz"), "--precision", "bf16", "--force-precision"]
        )
        == 0
    )
    with np.load(tmp_path / "fp32.npz") as full, np.load(tmp_path / "bf16.npz") as low:
        assert json.loads(str(full["meta"]))["options"]["arithmetic"]["precision"] == "fp32"
        assert json.loads(str(low["meta"]))["options"]["arithmetic"]["precision"] == "bf16"
        for key in ("line-1", "line-2"):
            assert low[key].dtype == np.float32 and not np.array_equal(low[key], full[key])
            np.testing.assert_allclose(low[key], full[key], atol=0.1)  # LayerNorm'd: ~N(0, 1)


def test_forced_bf16_elmo_pretraining_takes_the_option_by_its_flat_name(cpu, tmp_path, monkeypatch):
    """As the quickstart passes options to the recipes: `precision=...` among the flat names."""
    seen = linear_dtypes(monkeypatch, pretrain_elmo_module, "ElmoBiLM")
    text = tmp_path / "repeated.txt"
    text.write_text("the cat sat on the mat . the dog ate the bone .\n" * 40)
    values = {"train_data": [str(text)], "valid_data": [str(text)], "out": str(tmp_path / "run")}
    values.update(model="elmo-tiny", window=10, batch_size=4, micro_batch_size=4)
    values.update(warmup_steps=0, max_steps=2, eval_windows=4, threads=1)
    config = from_options(ElmoPretrainConfig, **values, precision="bf16", force_precision=True)
    result = pretrain_elmo_module.pretrain_elmo(config)
    assert result["precision"] == "bf16" and math.isfinite(result["perplexity"])
    assert {dtype for _, _, dtype in seen} == {torch.bfloat16}
    assert {training for training, _, _ in seen} == {True, False}  # training and held-out
    weights = load_file(tmp_path / "run" / "checkpoints" / "step-00000002" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["config"]["precision"] == "bf16"


# ---------------------------------------------------------------- fp16's loss scale


class Repeat:
    """The same micro-batch for ever (the loop's batches contract)."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Squares:
    """Summed squared error of a regression (the loop's objective contract)."""

    def __call__(self, model, batch):
        error = model(batch["input_ids"]).float().squeeze(-1) - batch["labels"]
        return {"mse": (error**2).sum()}

    def count_targets(self, batch):
        return {"mse": len(batch["labels"])}


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(8, 1)


def regression(
    tmp_path, name: str, precision_name: str, steps: int, poison: bool = False
) -> tuple[nn.Module, list]:
    """A linear regression trained `steps` steps in `precision_name`; its train records.
    `poison`: one input is NaN."""
    data = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=data)
    x[0, 0] = math.nan if poison else x[0, 0]
    batch = {"input_ids": x, "labels": x @ torch.randn(8, generator=data)}
    model, schedule = linear(), {"warmup_steps": 0, "learning_rate": 1e-2, "log_every": 1}
    config = TrainConfig(max_steps=steps, save_every=steps, precision=precision_name, **schedule)
    train(model, Squares(), Repeat(batch), config, tmp_path / name, config_dict={})
    records = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return model, [json.loads(r) for r in records if '"train"' in r]


def test_fp16_overflowing_steps_are_skipped_not_taken_for_divergence(tmp_path, monkeypatch):
    """On the CPU, where fp16 autocast runs too (the CLI refuses it: it does not pay there), the
    loop's GradScaler path is what it is on a GPU."""
    monkeypatch.setattr(loop, "INIT_SCALE", 2.0**40)  # every scaled gradient overflows fp16
    start = linear().state_dict()
    model, records = regression(tmp_path, "overflow", "fp16", 3)
    for name, tensor in model.state_dict().items():  # three skipped steps: nothing applied
        assert torch.equal(tensor, start[name]), name
    assert [(r["step"], r["loss_scale"]) for r in records] == [
        (1, 2.0**39),
        (2, 2.0**38),
        (3, 2.0**37),
    ]
    state = json.loads(
        (checkpoints(tmp_path / "overflow" / "checkpoints")[-1] / "trainer_state.json").read_text()
    )
    assert state["grad_scaler"]["scale"] == 2.0**37  # halved at each overflow
    assert state["train_config"]["precision"] == "fp16"
    # a scale that fits: gradients are unscaled before the norm is measured (and clipped)
    monkeypatch.setattr(loop, "INIT_SCALE", 2.0**10)
    half, half_records = regression(tmp_path, "fp16", "fp16", 3)
    full, full_records = regression(tmp_path, "fp32", "fp32", 3)
    for a, b in zip(half_records, full_records, strict=True):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-2)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-2)
    assert not torch.equal(half.weight, start["weight"])
    torch.testing.assert_close(half.weight, full.weight, atol=1e-3, rtol=0)
    assert "loss_scale" not in full_records[0]


def test_a_non_finite_loss_names_the_precision_in_use(tmp_path):
    with pytest.raises(TrainingError) as error:
        regression(tmp_path, "nan", "bf16", 2, poison=True)
    assert str(error.value).startswith(
        "step 1: loss nan, gradient norm nan (under bf16): diverging, stopped before this update; "
    )


def test_a_forced_bf16_downstream_model_trains_and_evaluates_in_bf16(
    cpu, finetune_workspace, tmp_path, capsys, monkeypatch
):
    seen = linear_dtypes(monkeypatch, finetune_features, "build_downstream")
    root = finetune_workspace[0]
    out = tmp_path / "bag"
    argv = ["finetune", "--task", "sst2", "--data", str(root / "glue"), "--out", str(out)]
    argv += ["--model", "random-embeddings", "--downstream", "bag-of-embeddings", *ELMO_TINY]
    argv += ["--epochs", "2", "--precision", "bf16", "--force-precision"]
    assert main(argv) == 0
    assert {dtype for _, _, dtype in seen} == {torch.bfloat16}
    assert {(training, inference) for training, inference, _ in seen} == {
        (True, False),
        (False, True),
    }
    metrics = json.loads((out / "seed-1" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    weights = load_file(out / "seed-1" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    argv = ["evaluate", "--model", str(out), "--data", str(root / "glue"), "--device", "cpu"]
    argv += ["--out", str(tmp_path / "ev"), "--precision", "bf16", "--force-precision"]
    assert main(argv) == 0
    assert (
        json.loads((tmp_path / "ev" / "evaluate.json").read_text())["dev"] == metrics["dev"]["dev"]
    )
