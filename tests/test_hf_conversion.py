"""Hugging Face checkpoints both ways: export, import, round trips and the errors on bad files."""

import json

import pytest
import torch
from safetensors.torch import load_file

from muppets.errors import ConfigError, InputError
from muppets.models.hf import (
    bert_state_dict_from_hf,
    bert_state_dict_to_hf,
    load_hf_checkpoint,
    save_hf_checkpoint,
)
from muppets.models.registry import build_pretraining_model
from tests.test_bert_parity import ATOL, padded_batch, tiny_config


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def hf_random(model_type):
    """A transformers model with random weights (its own init), eval mode."""
    import transformers

    config = tiny_config(model_type)
    d = {k: v for k, v in config.to_dict().items() if k != "pre_layer_norm"}
    if model_type == "roberta":
        return transformers.RobertaForMaskedLM(transformers.RobertaConfig(**d)).eval(), config
    return transformers.BertForPreTraining(transformers.BertConfig(**d)).eval(), config


def test_export_loads_in_transformers_with_the_same_outputs(tmp_path):
    import transformers

    torch.manual_seed(0)
    config = tiny_config()
    model = build_pretraining_model(config).eval()
    save_hf_checkpoint(model, config, tmp_path)
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    ids, mask, segments, masked = padded_batch(config)
    with torch.no_grad():
        ours = model(ids, mask, segments, masked_positions=masked)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    assert torch.allclose(ours.mlm_logits, theirs.prediction_logits[masked], atol=ATOL)
    assert torch.allclose(ours.pair_logits, theirs.seq_relationship_logits, atol=ATOL)
    # The decoder is tied: the file holds what save_pretrained writes, not the tied copies.
    hf.save_pretrained(tmp_path / "hf")
    assert (
        load_file(tmp_path / "model.safetensors").keys()
        == load_file(tmp_path / "hf" / "model.safetensors").keys()
    )
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "BertForPreTraining"
    ]


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_transformers_save_pretrained_loads_with_the_same_outputs(tmp_path, model_type):
    torch.manual_seed(1)
    hf, config = hf_random(model_type)
    hf.save_pretrained(tmp_path)
    loaded_config, model = load_hf_checkpoint(tmp_path)
    assert loaded_config == config
    ids, mask, segments, masked = padded_batch(config, lengths=(8, 12, 2))
    with torch.no_grad():
        ours = model(ids, mask, segments, masked_positions=masked)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    logits = theirs.logits if model_type == "roberta" else theirs.prediction_logits
    assert torch.allclose(ours.mlm_logits, logits[masked], atol=ATOL)
    if model_type == "bert":
        assert torch.allclose(ours.pair_logits, theirs.seq_relationship_logits, atol=ATOL)
    else:
        assert model.pair_head is None  # RobertaForMaskedLM has no NSP head and no pooler


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_round_trip_through_hf_names_and_files_is_the_identity(tmp_path, model_type):
    torch.manual_seed(2)
    config = tiny_config(model_type)
    model = build_pretraining_model(config)
    state = model.state_dict()
    assert same_state(bert_state_dict_from_hf(bert_state_dict_to_hf(state, config), config), state)
    save_hf_checkpoint(model, config, tmp_path)
    loaded_config, loaded = load_hf_checkpoint(tmp_path)
    assert loaded_config == config
    assert same_state(loaded.state_dict(), state)


def test_pytorch_bin_and_old_key_spellings_load(tmp_path):
    torch.manual_seed(3)
    config = tiny_config()
    model = build_pretraining_model(config)
    hf_state = bert_state_dict_to_hf(model.state_dict(), config)
    # TF-era names: LayerNorm.gamma/beta, a stored tied decoder and a position_ids buffer.
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in hf_state.items()}
    old["cls.predictions.decoder.weight"] = hf_state["bert.embeddings.word_embeddings.weight"]
    old["bert.embeddings.position_ids"] = torch.arange(40)[None]
    torch.save(old, tmp_path / "pytorch_model.bin")
    save_hf_checkpoint(model, config, tmp_path / "unused")
    (tmp_path / "config.json").write_text((tmp_path / "unused" / "config.json").read_text())
    _, loaded = load_hf_checkpoint(tmp_path)
    assert same_state(loaded.state_dict(), model.state_dict())


def test_pre_layer_norm_has_no_hf_export(tmp_path):
    config = tiny_config(pre_layer_norm=True)
    with pytest.raises(ConfigError, match="pre_layer_norm"):
        save_hf_checkpoint(build_pretraining_model(config), config, tmp_path)


def test_bad_checkpoints_raise_input_errors_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        load_hf_checkpoint(tmp_path)
    torch.manual_seed(4)
    config = tiny_config()
    save_hf_checkpoint(build_pretraining_model(config), config, tmp_path)
    weights = tmp_path / "model.safetensors"
    intact = weights.read_bytes()

    weights.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(InputError, match=r"model\.safetensors.*truncated or corrupted") as error:
        load_hf_checkpoint(tmp_path)
    assert error.value.path == str(weights)

    state = load_file_from_bytes(intact, tmp_path / "edited.safetensors")
    del state["bert.encoder.layer.1.output.dense.bias"]
    state["bert.encoder.layer.7.output.dense.bias"] = torch.zeros(32)
    with pytest.raises(
        InputError, match="1 missing.*layer.1.output.dense.bias.*1 unexpected.*layer.7"
    ):
        bert_state_dict_from_hf(state, config, weights)

    weights.write_bytes(intact)
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps({**json.loads(config_json.read_text()), "vocab_size": 50}))
    with pytest.raises(InputError, match=r"model\.safetensors.*word_embeddings.weight has shape"):
        load_hf_checkpoint(tmp_path)
    config_json.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InputError, match="config.json.*unsupported model_type 'gpt2'"):
        load_hf_checkpoint(tmp_path)
    config_json.write_text(json.dumps({"model_type": "bert", "hidden_size": 30}))
    with pytest.raises(ConfigError, match="config.json.*hidden_size=30"):
        load_hf_checkpoint(tmp_path)
    config_json.write_text('{"model_type": "bert",\n "hidden_size": }')
    with pytest.raises(InputError, match="config.json:2"):
        load_hf_checkpoint(tmp_path)


def load_file_from_bytes(data, path):
    path.write_bytes(data)
    return load_file(path)
