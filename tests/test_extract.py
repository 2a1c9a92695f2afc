"""`muppets extract`: shapes, tokens and values of ELMo and BERT features, the mean mix, errors."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from muppets.cli.main import main
from muppets.data.streams import tokenize_words
from muppets.models.elmo import PRESETS, ElmoBiLM, ElmoConfig
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tokenization.characters import batch_to_char_ids
from muppets.tokenization.words import build_word_vocabulary
from muppets.training.checkpoint import save_pretrained

LINES = ["The cat sat on the mat.", "", "A dog ran in the park, didn't it?", "Hot sun."]


@pytest.fixture(scope="module")
def elmo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("elmo")
    vocabulary = build_word_vocabulary({"the": 2, "cat": 1})
    vocabulary.save(directory / "word_vocab.txt")
    config = ElmoConfig(**{**PRESETS["elmo-tiny"], "vocab_size": len(vocabulary)})
    torch.manual_seed(0)
    model = ElmoBiLM(config).eval()
    save_pretrained(directory, model, config.to_dict(), [directory / "word_vocab.txt"])
    return directory, model


@pytest.fixture(scope="module")
def bert(tmp_path_factory, tiny_tokenizer):
    directory = tmp_path_factory.mktemp("bert")
    tokenizer = tiny_tokenizer
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=16, num_attention_heads=2
    )
    config.max_position_embeddings = 16
    torch.manual_seed(0)
    model = build_pretraining_model(config)
    save_pretrained(directory, model, config.to_dict())
    tokenizer.save(directory)
    return directory, model.eval(), tokenizer


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def extract(directory, text, out, layers="all", *more) -> int:
    argv = ["extract", "--model", str(directory), "--input", str(text), "--out", str(out)]
    return main([*argv, "--layers", layers, "--device", "cpu", *more])


def read(path) -> tuple[dict, dict, dict]:
    """(features, tokens, meta) of an .npz or .safetensors output."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            keys = [k for k in data.files if k.startswith("line-") and "." not in k]
            tokens = {k: data[f"{k}.tokens"].tolist() for k in keys}
            return {k: data[k] for k in keys}, tokens, json.loads(str(data["meta"]))
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
        features = {k: f.get_tensor(k) for k in f.keys()}
    tokens = {k: json.loads(metadata[f"{k}.tokens"]) for k in features}
    return features, tokens, json.loads(metadata["meta"])


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_elmo_features_one_array_per_line(elmo, text, tmp_path, suffix):
    directory, model = elmo
    out = tmp_path / f"features{suffix}"
    assert extract(directory, text, out, "all", "--batch-size", "3") == 0
    features, tokens, meta = read(out)
    assert sorted(features) == [f"line-{n}" for n in range(1, len(LINES) + 1)]
    assert meta["model_type"] == "elmo" and meta["lines"] == 4 and meta["layers"] == "all"
    for n, line in enumerate(LINES, 1):
        words = tokenize_words(line)
        assert tokens[f"line-{n}"] == words
        assert features[f"line-{n}"].shape == (3, len(words), 16)  # L + 1 layers of 2P
        if words:  # batched (and padded) == one line alone, boundaries removed
            alone = model(batch_to_char_ids([words]))  # L + 1 x (1, T + 2, 2P)
            expected = torch.stack([h[0, 1:-1] for h in alone]).detach().numpy()
            np.testing.assert_allclose(features[f"line-{n}"], expected, atol=1e-6)


def test_mean_and_top_are_mixes_of_all(elmo, bert, text, tmp_path):
    for directory in (elmo[0], bert[0]):
        outputs = {}
        for layers in ("all", "mean", "top"):
            out = tmp_path / f"{directory.name}-{layers}.npz"
            assert extract(directory, text, out, layers) == 0
            outputs[layers] = read(out)[0]
        for key, all_layers in outputs["all"].items():
            assert outputs["mean"][key].shape == (1, *all_layers.shape[1:])
            np.testing.assert_allclose(outputs["mean"][key][0], all_layers.mean(0), atol=1e-6)
            np.testing.assert_array_equal(outputs["top"][key][0], all_layers[-1])


def test_bert_features_with_cls_and_sep(bert, text, tmp_path):
    directory, model, tokenizer = bert
    out = tmp_path / "bert.safetensors"
    assert extract(directory, text, out) == 0
    features, tokens, meta = read(out)
    assert meta["model_type"] == "bert" and meta["model_layers"] == 3 and meta["dim"] == 16
    for n, line in enumerate(LINES, 1):
        ids = tokenizer.encode_pair(line)[0]
        assert tokens[f"line-{n}"] == [tokenizer.id_to_token(i) for i in ids]
        assert tokens[f"line-{n}"][0] == "[CLS]" and tokens[f"line-{n}"][-1] == "[SEP]"
        assert features[f"line-{n}"].shape == (3, len(ids), 16)  # embeddings + 2 layers
        with torch.no_grad():
            alone = model.encoder.forward_all_layers(torch.tensor([ids]))
        expected = torch.stack([h[0] for h in alone]).numpy()
        np.testing.assert_allclose(features[f"line-{n}"], expected, atol=1e-5)


def test_errors_are_one_line_with_the_place(bert, elmo, tmp_path, capsys):
    long = tmp_path / "long.txt"
    long.write_text("short\n" + "the cat " * 10 + "\n")
    out = tmp_path / "x.npz"
    assert extract(bert[0], long, out) == 2
    assert f"{long}:2: 22 tokens, more than the model's 16" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x.npz.tmp").exists()  # nothing half-written
    assert extract(elmo[0], long, tmp_path / "x.h5") == 2
    assert "out must end in .npz or .safetensors" in capsys.readouterr().err
    assert extract(elmo[0], tmp_path / "missing.txt", out) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
