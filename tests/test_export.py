"""`muppets export --format onnx [--quantize int8]`: ONNX Runtime's scores equal the PyTorch
model's within 1e-4 on padded batches of shapes other than the traced one, for each encoder
family; `muppets serve` on the exported directory answers exactly what `muppets predict` writes
(classify labels, QA spans); int8 really quantizes; bad input is one line and exit status 2."""

import json
import sys

import pytest
import torch

from muppets.cli.main import main
from muppets.models.registry import build_encoder, preset_config
from muppets.recipes.export import INPUTS, TaskLogits, padded_batch, session
from muppets.tasks.registry import build_head
from muppets.tasks.setup import TaskSetup, save_task
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_finetuned
from tests.serve_helpers import (
    call,
    running,
    save_classifier,
    save_pretrained_bert,
    save_qa,
    save_tagger,
    served_app,
)
from tests.test_serve import CONTEXT, QUESTIONS, predict_file, texts

pytest.importorskip("onnxruntime")


def export(model, out, *extra) -> int:
    return main(["export", "--model", str(model), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def models(tiny_tokenizer, tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("export-models")
    found = {
        "classify": save_classifier(root / "classify", tiny_tokenizer, texts(24)),
        "qa": save_qa(root / "qa", tiny_tokenizer, QUESTIONS, CONTEXT),
        "tag": save_tagger(root / "tag", tiny_tokenizer),
    }
    for name, source in list(found.items()):
        assert export(source, root / f"{name}-onnx") == 0
        found[f"{name}-onnx"] = root / f"{name}-onnx"
    return found


def save_family_classifier(directory, tokenizer, preset: str):
    """A random 3-label classifier of a family's tiny preset, saved as `muppets finetune` does."""
    torch.manual_seed(1)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    extra = {"embedding_size": 16} if preset.startswith(("albert", "electra")) else {}
    config = preset_config(
        preset,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_id,
        intermediate_size=64,
        **sizes,
        **extra,
    )
    setup = TaskSetup("mnli", "classification", ["a", "b", "c"], 16)
    model = build_head(setup.spec, build_encoder(config), 3).eval()
    save_pretrained(directory, model, config.to_dict())
    tokenizer.save(directory)
    save_task(directory, setup)
    return directory


def onnx_difference(source, exported, lengths, seed) -> float:
    """max |ONNX Runtime - PyTorch| at real tokens of a fresh padded batch (its own shape)."""
    model, setup, tokenizer = load_finetuned(source)
    segments = json.loads((source / "config.json").read_text())["type_vocab_size"]
    batch = padded_batch(tokenizer.vocab_size, tokenizer.pad_id, lengths, seed, segments)
    with torch.inference_mode():
        expected = TaskLogits(model, setup.head)(*(batch[name] for name in INPUTS))
    feeds = {name: batch[name].numpy() for name in INPUTS}
    got = torch.from_numpy(session(exported / "model.onnx", 1).run(None, feeds)[0])
    assert got.shape == expected.shape
    if expected.dim() == 3:
        keep = batch["attention_mask"].bool()
        got, expected = got[keep], expected[keep]
    return float((got - expected).abs().max())


@pytest.mark.parametrize("name", ["classify", "qa", "tag"])
def test_onnx_scores_match_pytorch_on_padded_batches(models, name):
    recorded = json.loads((models[f"{name}-onnx"] / "export.json").read_text())
    assert recorded["quantize"] == "none" and recorded["max_abs_difference_fp32"] <= 1e-4
    for lengths, seed in (([9, 2, 5, 1], 3), ([4], 4), ([12, 12], 5)):
        lengths = [min(n, 12) for n in lengths]
        assert onnx_difference(models[name], models[f"{name}-onnx"], lengths, seed) <= 1e-4


@pytest.mark.parametrize("preset", ["roberta-mini", "albert-tiny", "electra-tiny"])
def test_every_family_exports_within_tolerance(preset, tiny_tokenizer, tmp_path, one_thread):
    source = save_family_classifier(tmp_path / preset, tiny_tokenizer, preset)
    assert export(source, tmp_path / "onnx") == 0
    assert onnx_difference(source, tmp_path / "onnx", [16, 3, 9], 7) <= 1e-4


def test_served_classify_and_qa_through_onnx_equal_predict(models, tmp_path, capsys):
    sentences = texts(24)
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "".join(f"{s}\t0\n" for s in sentences))
    written = predict_file(models["classify"], dev, tmp_path / "pred.tsv", capsys)
    expected = [line.split("\t")[1] for line in written.splitlines()[1:]]
    assert set(expected) == {"0", "1"}
    with running(served_app(models["classify-onnx"])) as port:
        info = call(port, "GET", "/info")[2]
        status, _, body = call(port, "POST", "/classify", {"inputs": sentences})
        refused = call(port, "POST", "/embed", {"inputs": ["the cat"]})[0]
    assert status == 200 and [r["label"] for r in body["results"]] == expected
    assert info["backend"] == "onnxruntime" and info["quantize"] == "none"
    assert info["routes"] == ["classify"] and refused == 404

    qas = [
        {"id": f"q{n}", "question": q, "answers": [], "is_impossible": True}
        for n, q in enumerate(QUESTIONS)
    ]
    document = {"version": "v2.0", "data": [{"paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(document))
    spans = json.loads(
        predict_file(models["qa"], tmp_path / "dev.json", tmp_path / "p.json", capsys)
    )
    inputs = [{"question": q, "context": CONTEXT} for q in QUESTIONS]
    with running(served_app(models["qa-onnx"])) as port:
        status, _, body = call(port, "POST", "/qa", {"inputs": inputs})
    answers = [r["answer"] for r in body["results"]]
    assert status == 200 and answers == [spans[f"q{n}"] for n in range(len(QUESTIONS))]
    assert "" in answers and any(answers)  # the v2.0 threshold chose both ways


def test_serve_command_runs_an_export_in_fp32_on_the_cpu(models, monkeypatch):
    import muppets.training.precision
    from muppets.serve.run import ServeConfig, build

    # as on a CPU with AMX: the PyTorch model would run in bf16, the exported graph cannot
    monkeypatch.setattr(muppets.training.precision, "resolve_precision", lambda *_: "bf16")
    app, line = build(ServeConfig(model=str(models["tag-onnx"]), threads=1))
    assert line.startswith(f"serve: {models['tag-onnx']} (/tag); precision: fp32 on cpu")
    with running(app) as port:
        info = call(port, "GET", "/info")[2]
    assert info["precision"] == "fp32" and info["backend"] == "onnxruntime"


def test_int8_quantizes_the_linear_layers(models, tmp_path):
    import onnx

    assert export(models["classify"], tmp_path / "int8", "--quantize", "int8") == 0
    graph = onnx.load(str(tmp_path / "int8" / "model.onnx")).graph
    kinds = {node.op_type for node in graph.node}
    assert kinds & {"DynamicQuantizeMatMul", "MatMulInteger"}
    int8 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 8  # 2 layers x (QKV, output, up, down) at least
    recorded = json.loads((tmp_path / "int8" / "export.json").read_text())
    assert recorded["quantize"] == "int8"
    assert 0 < recorded["max_abs_difference_int8"] < float("inf")


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("muppets: error: ")
    return err


def test_bad_input_is_one_line(models, tiny_tokenizer, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    err = one_error_line(capsys, export(broken, tmp_path / "a"))
    assert "config.json" in err
    pretrained = save_pretrained_bert(tmp_path / "bert", tiny_tokenizer)
    err = one_error_line(capsys, export(pretrained, tmp_path / "b"))
    assert "not a fine-tuned model" in err
    err = one_error_line(capsys, export(models["classify"], tmp_path / "c", "--format", "pt"))
    assert "format must be 'onnx'" in err
    err = one_error_line(capsys, export(models["classify"], tmp_path / "d", "--quantize", "int4"))
    assert "quantize must be one of none, int8" in err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    err = one_error_line(capsys, export(models["classify"], tmp_path / "e", "--quantize", "int8"))
    assert "pip install 'muppets[export]'" in err
    assert not (tmp_path / "e" / "model.onnx").exists()
