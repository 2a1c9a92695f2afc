"""ERNIE checkpoints as transformers writes them (ErnieForMaskedLM, ErnieForPreTraining; with and
without the task-type table of use_task_id): `muppets convert` both ways keeps transformers'
logits within 1e-5, and a BERT pretrained here exports as ERNIE or as BERT alike."""

import json

import pytest
import torch

from muppets.cli.main import main
from muppets.training.pretrained import load_checkpoint

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "new", "york", "##s", "."]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def write_tokenizer(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(str(directory / "vocab.txt")).save_pretrained(directory)


def ernie_directory(root, name, use_task_id, seed=0):
    torch.manual_seed(seed)
    config = transformers.ErnieConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        use_task_id=use_task_id,
    )
    model = getattr(transformers, name)(config)
    with torch.no_grad():  # a non-zero task row 0, so folding it is tested
        if use_task_id:
            model.ernie.embeddings.task_type_embeddings.weight.normal_(0, 0.5)
    directory = root / f"{name}-{use_task_id}"
    model.save_pretrained(directory)
    write_tokenizer(directory)
    return directory


def batch(tokenizer):
    rows = [
        tokenizer.encode_pair("the cat sat on the mat", "a dog ran"),
        tokenizer.encode_pair("new york"),
    ]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((2, T), tokenizer.pad_id)
    segments, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for n, (row, types) in enumerate(rows):
        ids[n, : len(row)], segments[n, : len(row)] = torch.tensor(row), torch.tensor(types)
        mask[n, : len(row)] = 1
    masked = mask.bool() & (torch.arange(T) % 2 == 1)
    return ids, mask, segments, masked


def hf_logits(directory, ids, mask, segments):
    name = json.loads((directory / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, name).from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    mlm = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
    return name, mlm, getattr(out, "seq_relationship_logits", None)


def ours_logits(directory, ids, mask, segments, masked):
    with torch.no_grad():
        out = load_checkpoint(directory).model(ids, mask, segments, masked)
    return out.mlm_logits, out.pair_logits


@pytest.mark.parametrize("use_task_id", [True, False])
@pytest.mark.parametrize("name", ["ErnieForMaskedLM", "ErnieForPreTraining"])
def test_convert_ernie_both_ways_keeps_transformers_logits(tmp_path, capsys, name, use_task_id):
    source = ernie_directory(tmp_path, name, use_task_id)
    ours = tmp_path / "ours"
    assert main(["convert", "--input", str(source), "--out", str(ours), "--to", "muppets"]) == 0
    ids, mask, segments, masked = batch(load_checkpoint(ours).tokenizer)
    _, mlm, nsp = hf_logits(source, ids, mask, segments)
    our_mlm, our_nsp = ours_logits(ours, ids, mask, segments, masked)
    assert (our_mlm - mlm[masked]).abs().max() <= ATOL
    assert (nsp is None) == (our_nsp is None)
    if nsp is not None:
        assert (our_nsp - nsp).abs().max() <= ATOL
    back = tmp_path / "back"
    args = ["convert", "--input", str(ours), "--out", str(back), "--to", "hf"]
    assert main([*args, "--hf-model-type", "ernie"]) == 0
    saved = json.loads((back / "config.json").read_text())
    assert (saved["model_type"], saved["use_task_id"]) == ("ernie", False)
    arch, mlm_back, nsp_back = hf_logits(back, ids, mask, segments)
    assert arch == name and (mlm_back - mlm).abs().max() <= ATOL
    if nsp is not None:
        assert (nsp_back - nsp).abs().max() <= ATOL
    # straight from the transformers directory too (no conversion step)
    direct_mlm, _ = ours_logits(source, ids, mask, segments, masked)
    assert (direct_mlm - mlm[masked]).abs().max() <= ATOL


@pytest.mark.parametrize("heads", ["mlm+nsp", "mlm"])
def test_a_bert_pretrained_here_exports_as_ernie_or_bert(tmp_path, heads):
    from muppets.models.registry import build_pretraining_model, preset_config
    from muppets.training.checkpoint import save_pretrained

    config = preset_config(
        "bert-tiny",
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=48,
    )
    torch.manual_seed(1)
    model = build_pretraining_model(config, with_pair_head=heads == "mlm+nsp")
    ours = tmp_path / "ours"
    save_pretrained(ours, model, config.to_dict())
    write_tokenizer(ours)
    ids, mask, segments, masked = batch(load_checkpoint(ours).tokenizer)
    our_mlm, our_nsp = ours_logits(ours, ids, mask, segments, masked)
    expected = {"ernie": "ErnieFor", "bert": "BertFor"}
    for kind, prefix in expected.items():
        out = tmp_path / kind
        args = ["convert", "--input", str(ours), "--out", str(out), "--to", "hf"]
        assert main([*args, "--hf-model-type", kind]) == 0
        arch, mlm, nsp = hf_logits(out, ids, mask, segments)
        assert arch == prefix + ("PreTraining" if heads == "mlm+nsp" else "MaskedLM")
        assert (mlm[masked] - our_mlm).abs().max() <= ATOL
        if heads == "mlm+nsp":
            assert (nsp - our_nsp).abs().max() <= ATOL


def test_bad_hf_model_type_is_one_line(tmp_path, cli_error):
    line = cli_error(["convert", "--input", "x", "--out", str(tmp_path), "--hf-model-type", "gpt"])
    assert "hf_model_type must be 'bert' or 'ernie', got 'gpt'" in line
