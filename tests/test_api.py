"""The Python API: `import muppets` stays light, every public name is its module's object, and the
README's example runs as written."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import muppets

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_muppets_loads_nothing_else():
    code = "import sys, muppets; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('muppets', 'torch', 'transformers', 'tokenizers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['muppets']"


def test_every_public_name_is_the_object_its_module_defines():
    assert set(muppets.__all__) <= set(dir(muppets))
    assert len(muppets.__all__) == len(set(muppets.__all__)) == 42
    for name, module in muppets._API.items():
        assert getattr(muppets, name) is getattr(importlib.import_module(module), name), name
    assert (muppets.SAMPLES / "wiki.train.txt").is_file()
    assert (muppets.SAMPLES / "SST-2" / "dev.tsv").is_file()
    with pytest.raises(AttributeError, match="no attribute 'load_bert'"):
        muppets.load_bert  # noqa: B018


def readme_example() -> str:
    """The one ```python block of the README's "Python API" section."""
    section = README.read_text(encoding="utf-8").split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_the_readme_example_runs_and_its_checkpoint_reloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)

    result, model, tokenizer = namespace["result"], namespace["model"], namespace["tokenizer"]
    assert result["step"] == 3 and result["stopped"] == "max_steps"
    checkpoint = tmp_path / "bert-tiny" / "checkpoints" / "step-00000003"
    assert Path(result["checkpoint"]).resolve() == checkpoint
    assert tokenizer.vocab_size == 2000 == namespace["bert_config"].vocab_size
    # the loaded weights are the saved ones, bit for bit
    saved = load_file(checkpoint / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    # one mask, five guesses, most likely first, a probability each
    (guesses,) = namespace["predictions"]
    probabilities = [p for _, p in guesses]
    assert len(guesses) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < probabilities[-1] and sum(probabilities) < 1
    # the model is in eval mode (no dropout): the same text twice, and after a second load, gives
    # identical probabilities
    again, _, _ = muppets.load_pretrained(checkpoint)
    text = "the [MASK] of the city ."
    assert muppets.fill_mask(model, tokenizer, text) == namespace["predictions"]
    assert muppets.fill_mask(again, tokenizer, text) == namespace["predictions"]
