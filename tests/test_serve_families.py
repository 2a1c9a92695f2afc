"""Other model families behind `muppets serve`: an ELMo biLM embeds (its layers or their mix),
and --downstream models classify and tag exactly as `muppets predict` does."""

import csv

import pytest
import torch
from conftest import ELMO_TINY, finetune_elmo

from muppets.cli.main import main
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.recipes.extract import elmo_featurizer
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_elmo, load_pretrained
from tests.serve_helpers import call, running, served_app

pytestmark = pytest.mark.usefixtures("one_thread")


def test_elmo_embeds_its_layers_and_their_mix(elmo_workspace):
    _, elmo = elmo_workspace
    text = "the good film was so good"
    model, _, _ = load_elmo(elmo)
    with torch.no_grad():
        layers, mask, _ = elmo_featurizer(model)([text], [1])
    with running(served_app(elmo)) as port:
        info = call(port, "GET", "/info")[2]
        mixed = call(port, "POST", "/embed", {"inputs": [text], "layer": "mix"})[2]
        first = call(port, "POST", "/embed", {"inputs": [text, "so"], "layer": 0})[2]
        refused = call(port, "POST", "/embed", {"inputs": [text], "pooling": "cls"})
        beyond = call(port, "POST", "/embed", {"inputs": [text], "layer": 3})
    assert info["routes"] == ["embed"] and info["layers"] == 3
    mix = torch.stack(layers).mean(0)[0].mean(0)  # (D,): the mean of the layers, then of words
    assert torch.allclose(torch.tensor(mixed["results"][0]["embedding"]), mix, atol=1e-5)
    assert torch.allclose(
        torch.tensor(first["results"][0]["embedding"]), layers[0][0].mean(0), atol=1e-5
    )
    assert refused[0] == 422 and refused[2]["error"]["field"] == "pooling"
    assert beyond[0] == 422 and beyond[2]["error"]["message"] == "3: this model has layers 0..2"


RUNS = [("sst2", "glue", "bag-of-embeddings"), ("conll2003", "conll", "bilstm")]


@pytest.mark.parametrize("task, folder, kind", RUNS)
def test_downstream_models_answer_what_predict_writes(elmo_workspace, tmp_path, task, folder, kind):
    root, _ = elmo_workspace
    run = tmp_path / "run"
    args = ["--task", task, "--data", str(root / folder), "--model", "random-embeddings"]
    code, _ = finetune_elmo(
        [*args, "--downstream", kind, "--out", str(run), "--epochs", "1", *ELMO_TINY]
    )
    assert code == 0
    dev = root / "glue" / "SST-2" / "dev.tsv" if task == "sst2" else root / "conll" / "valid.txt"
    out = tmp_path / "predictions.txt"
    assert main(["predict", "--model", str(run), "--input", str(dev), "--out", str(out)]) == 0
    written = out.read_text().splitlines()
    with running(served_app(run)) as port:
        if task == "sst2":
            with dev.open() as f:
                sentences = [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]
            body = call(port, "POST", "/classify", {"inputs": sentences})[2]
            assert [r["label"] for r in body["results"]] == [
                line.split("\t")[1] for line in written[1:]
            ]
            return
        blocks = "\n".join(written).split("\n\n")
        sentences = [
            [line.split() for line in block.splitlines()] for block in blocks if block.strip()
        ]
        texts = [" ".join(row[0] for row in s) for s in sentences]
        body = call(port, "POST", "/tag", {"inputs": texts})[2]
    assert [r["tags"] for r in body["results"]] == [[row[2] for row in s] for s in sentences]


FAMILIES = [("electra-tiny", ["embed"]), ("roberta-mini", ["embed", "fill-mask"])]


@pytest.mark.parametrize("preset, routes", FAMILIES)
def test_other_bert_family_encoders_embed(tiny_tokenizer, tmp_path, preset, routes):
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    extra = {"embedding_size": 16} if preset.startswith("electra") else {}
    vocabulary = {"vocab_size": tiny_tokenizer.vocab_size, "pad_token_id": tiny_tokenizer.pad_id}
    config = preset_config(preset, **vocabulary, **sizes, intermediate_size=64, **extra)
    torch.manual_seed(0)
    save_pretrained(tmp_path, build_pretraining_model(config), config.to_dict())
    tiny_tokenizer.save(tmp_path)
    model, _, tokenizer = load_pretrained(tmp_path)
    text = "the cat sat on the mat ."
    ids = torch.tensor([tokenizer.encode_pair(text)[0]])
    with torch.no_grad():
        layers = model.encoder.forward_all_layers(ids, torch.ones_like(ids), torch.zeros_like(ids))
    with running(served_app(tmp_path)) as port:
        info = call(port, "GET", "/info")[2]
        body = call(port, "POST", "/embed", {"inputs": [text], "pooling": "cls"})[2]
    assert info["routes"] == routes and info["model_type"] == preset.split("-")[0]
    assert torch.allclose(
        torch.tensor(body["results"][0]["embedding"]), layers[-1][0, 0], atol=1e-5
    )
