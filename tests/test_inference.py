"""Loading checkpoints (ours and transformers'), fill-mask, conversion and their input errors."""

import json

import pytest
import torch

from muppets.cli.main import main
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.recipes.fill_mask import fill_mask
from muppets.tokenization.wordpiece import train_wordpiece
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_pretrained


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer):
    """A tiny random BERT with NSP head and its tokenizer, saved as a muppets checkpoint."""
    directory = tmp_path_factory.mktemp("ckpt")
    tokenizer = tiny_tokenizer
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, num_attention_heads=2
    )
    torch.manual_seed(0)
    model = build_pretraining_model(config)
    save_pretrained(directory, model, config.to_dict(), extra_files=[])
    tokenizer.save(directory)
    return directory, model.eval()


def test_load_is_the_saved_model(checkpoint):
    directory, model = checkpoint
    loaded, config, tokenizer = load_pretrained(directory)
    assert config.hidden_size == 32 and tokenizer.vocab_size == config.vocab_size
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_fill_mask_equals_transformers_after_export(checkpoint, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    directory, _ = checkpoint
    model, _, tokenizer = load_pretrained(directory)
    ours = fill_mask(model, tokenizer, "the cat [MASK] on the [MASK] .", top_k=3)
    assert len(ours) == 2 and all(len(options) == 3 for options in ours)
    assert main(["convert", "--input", str(directory), "--out", str(tmp_path), "--to", "hf"]) == 0
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    encoded = hf_tokenizer("the cat [MASK] on the [MASK] .", return_tensors="pt")
    with torch.no_grad():
        logits = hf(**encoded).prediction_logits[0]
    positions = (encoded["input_ids"][0] == hf_tokenizer.mask_token_id).nonzero()[:, 0]
    probs = logits[positions].softmax(-1).topk(3)
    for options, values, indices in zip(ours, probs.values, probs.indices, strict=True):
        assert [t for t, _ in options] == hf_tokenizer.convert_ids_to_tokens(indices.tolist())
        assert torch.allclose(torch.tensor([p for _, p in options]), values, atol=1e-5)
    # ... and back: the HF directory loads into muppets with the same predictions
    again, _, tokenizer = load_pretrained(tmp_path)
    back = fill_mask(again, tokenizer, "the cat [MASK] on the [MASK] .", top_k=3)
    assert [[t for t, _ in o] for o in back] == [[t for t, _ in o] for o in ours]
    for a, b in zip(back, ours, strict=True):
        assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-6)


def test_fill_mask_cli_prints_the_predictions(checkpoint, capsys):
    directory, _ = checkpoint
    assert main(["predict", "fill-mask", "--model", str(directory), "the [MASK] sat ."]) == 0
    precision, *out = capsys.readouterr().out.splitlines()  # the arithmetic is said first
    assert precision.startswith("precision: ") and precision.endswith(")")
    assert out[0] == "the [MASK] sat ." and out[1].startswith("  [MASK] #1: ")
    assert len(out) == 2 and len(out[1].removeprefix("  [MASK] #1: ").split("  ")) == 5


def copy_checkpoint(directory, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def test_vocabulary_mismatch_is_one_clear_line(checkpoint, tiny_corpus, tmp_path, capsys):
    directory, _ = checkpoint
    target = copy_checkpoint(directory, tmp_path)
    more = tiny_corpus + ["zebras quietly graze"] * 5
    other = train_wordpiece(more, vocab_size=80, min_frequency=1)
    other.save(target)  # the tokenizer of another vocabulary
    code = main(["predict", "fill-mask", "--model", str(target), "a [MASK] ."])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("muppets: error: ") and "different vocabularies" in err[0]


def test_truncated_weights_are_one_clear_line(checkpoint, tmp_path, capsys):
    directory, _ = checkpoint
    target = copy_checkpoint(directory, tmp_path)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code = main(["predict", "fill-mask", "--model", str(target), "a [MASK] ."])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(weights) in err[0]


def test_heads_not_dividing_hidden_size_names_the_file(checkpoint, tmp_path, capsys):
    directory, _ = checkpoint
    target = copy_checkpoint(directory, tmp_path)
    config = json.loads((target / "config.json").read_text())
    config["num_attention_heads"] = 5
    (target / "config.json").write_text(json.dumps(config))
    code = main(["predict", "fill-mask", "--model", str(target), "a [MASK] ."])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "config.json" in err[0] and "num_attention_heads" in err[0]
