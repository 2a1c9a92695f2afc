"""Other model families behind `muppets serve`: an ELMo biLM embeds (its layers or their mix),
and --downstream models classify and tag exactly as `muppets predict` does."""

import csv

import pytest
import torch
from conftest import ELMO_TINY, finetune_elmo

from muppets.cli.main import main
from muppets.recipes.extract import elmo_featurizer
from muppets.training.pretrained import load_elmo
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
