"""training/precision.py: the decision table on faked CPUs, the exact error lines, autocast."""

import pytest
import torch

from muppets.errors import ConfigError
from muppets.training import precision

AMX = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
AVX512_BF16 = "fpu sse2 avx2 avx512f avx512_bf16"
NONE = "fpu sse2 avx2 fma f16c"  # an AMD EPYC of this project: no bf16 hardware


def fake_cpu(monkeypatch, tmp_path, flags: str | None, model: str = "Fake CPU 9000") -> None:
    """/proc/cpuinfo with two processors (the first counts); flags None: no flags line."""
    block = f"processor\t: 0\nmodel name\t: {model}\n"
    if flags is not None:
        block += f"flags\t\t: {flags}\n"
    path = tmp_path / "cpuinfo"
    path.write_text(block + "\n" + block.replace(": 0", ": 1").replace(model, "Other"))
    monkeypatch.setattr(precision, "CPUINFO", path)


@pytest.mark.parametrize(
    "flags, name, force, expected",
    [
        (AMX, "auto", False, "bf16"),
        (AVX512_BF16, "auto", False, "bf16"),
        (NONE, "auto", False, "fp32"),
        (AMX, "fp32", False, "fp32"),
        (NONE, "fp32", False, "fp32"),
        (AMX, "bf16", False, "bf16"),
        (NONE, "bf16", True, "bf16"),  # forced: the user asked for it knowingly
        (NONE, "auto", True, "fp32"),  # force never turns auto into bf16
    ],
)
def test_decision_table_on_cpu(monkeypatch, tmp_path, flags, name, force, expected):
    fake_cpu(monkeypatch, tmp_path, flags)
    assert precision.bf16_supported("cpu") == (flags != NONE)
    assert precision.resolve_precision(name, torch.device("cpu"), force=force) == expected


def test_bf16_without_hardware_is_one_line_naming_the_force_flag(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, tmp_path, NONE, model="AMD EPYC 7B13")
    with pytest.raises(ConfigError) as error:
        precision.resolve_precision("bf16", "cpu")
    assert str(error.value) == (
        "--precision bf16: this CPU (AMD EPYC 7B13: no AMX or avx512_bf16) has no bf16 hardware, "
        "so it would run ~100x slower than fp32; use --precision auto or fp32, "
        "or add --force-precision to run it anyway"
    )


def test_fp16_on_cpu_and_unknown_names_are_refused(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, tmp_path, AMX)
    with pytest.raises(ConfigError) as error:
        precision.resolve_precision("fp16", "cpu", force=True)
    assert str(error.value) == (
        "--precision fp16: runs on a GPU only; on the CPU use --precision auto, fp32 or bf16"
    )
    with pytest.raises(ConfigError) as error:
        precision.resolve_precision("bfloat16", "cpu")
    assert str(error.value) == "--precision 'bfloat16': must be one of auto, fp32, bf16, fp16"


def test_without_proc_cpuinfo_torch_probes_decide(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.describe("bf16", "cpu") == "precision: bf16 mixed (avx512_bf16) on cpu"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    # a cpuinfo without a flags line (some containers) also falls back to the probes
    fake_cpu(monkeypatch, tmp_path, None)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"


def test_describe_names_the_hardware_behind_the_choice(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, tmp_path, AMX)
    assert precision.describe("bf16", "cpu") == "precision: bf16 mixed (AMX) on cpu"
    assert precision.describe("fp32", "cpu") == (
        "precision: fp32 on cpu (AMX present: --precision auto would use bf16)"
    )
    fake_cpu(monkeypatch, tmp_path, NONE, model="AMD EPYC")
    assert (
        precision.describe("fp32", "cpu") == "precision: fp32 on cpu (no bf16 hardware: AMD EPYC)"
    )
    assert precision.describe("bf16", "cpu") == (
        "precision: bf16 mixed on cpu (forced; no bf16 hardware: AMD EPYC, ~100x slower)"
    )


def test_autocast_computes_a_linear_in_the_chosen_type():
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    with precision.autocast("bf16", "cpu"):
        low = linear(x)
    with precision.autocast("fp32", "cpu"):
        full = linear(x)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert linear.weight.dtype == torch.float32  # master weights stay fp32
    torch.testing.assert_close(full, x @ linear.weight.T + linear.bias)
    expected = (x.bfloat16() @ linear.weight.bfloat16().T + linear.bias.bfloat16()).float()
    torch.testing.assert_close(low.float(), expected, atol=2e-2, rtol=0)
    assert not torch.equal(low.float(), full)  # it really rounded to bf16
    with pytest.raises(ValueError, match="resolved precision"):
        precision.autocast("auto", "cpu")
