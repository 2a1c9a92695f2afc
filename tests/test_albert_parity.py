"""ALBERT numerics against transformers at tiny random sizes (E < H, shared groups of two inner
layers), the conversion both ways for every shape, the shared layers' summed gradient, and the
config errors."""

import re

import pytest
import torch

from muppets.errors import ConfigError
from muppets.models.albert import AlbertConfig
from muppets.models.hf_albert import (
    config_to_hf,
    read_hf_albert,
    save_hf_albert,
    state_dict_from_hf,
    state_dict_to_hf,
)
from muppets.models.registry import PRESETS, build_pretraining_model, preset_config
from tests.test_bert_parity import ATOL, padded_batch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides):
    """E 24 -> H 32 (4 heads), 4 layer applications over 2 groups of 2 inner layers."""
    values = dict(
        vocab_size=97,
        embedding_size=24,
        hidden_size=32,
        num_hidden_layers=4,
        num_hidden_groups=2,
        inner_group_num=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    return AlbertConfig(**{**values, **overrides})


def hf_twin(model, config, attn="eager"):
    """transformers' AlbertForPreTraining (or ...ForMaskedLM) holding our weights."""
    with_pair = model.pair_head is not None
    hf_config = transformers.AlbertConfig(
        **config_to_hf(config, with_pair_head=with_pair), attn_implementation=attn
    )
    cls = transformers.AlbertForPreTraining if with_pair else transformers.AlbertForMaskedLM
    hf = cls(hf_config)
    missing, unexpected = hf.load_state_dict(
        state_dict_to_hf(model.state_dict(), config), strict=False
    )
    assert not unexpected and set(missing) <= {
        "predictions.decoder.weight",
        "predictions.decoder.bias",
    }
    return hf.eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("pair", [True, False])
def test_logits_and_hidden_states_match_transformers(attn, pair):
    torch.manual_seed(0)
    config = tiny_config()
    model = build_pretraining_model(config, with_pair_head=pair).eval()
    hf = hf_twin(model, config, attn)
    ids, mask, segments, masked = padded_batch(config)
    real = mask.bool()
    with torch.no_grad():
        ours = model(ids, mask, segments, masked)
        states = model.encoder.forward_all_layers(ids, mask, segments)
        theirs = hf(
            input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True
        )
    # 4 applications x 2 inner layers, + the projected embeddings, as transformers records them
    assert len(states) == len(theirs.hidden_states) == 4 * 2 + 1
    for a, b in zip(states, theirs.hidden_states, strict=True):
        assert (a[real] - b[real]).abs().max() <= ATOL
    assert ours.mlm_logits.shape == (int(masked.sum()), config.vocab_size)
    logits = theirs.prediction_logits if pair else theirs.logits
    assert (ours.mlm_logits - logits[masked]).abs().max() <= ATOL
    if pair:
        assert (ours.pair_logits - theirs.sop_logits).abs().max() <= ATOL


def test_parameters_are_stored_once_per_group():
    """4 applications of 2 groups x 2 inner layers: 4 distinct layers, as transformers has."""
    config = tiny_config()
    model = build_pretraining_model(config)
    layer_names = [n for n in model.state_dict() if n.endswith("attention.qkv.weight")]
    assert layer_names == [
        f"encoder.layers.groups.{g}.layers.{k}.attention.qkv.weight"
        for g in range(2)
        for k in range(2)
    ]
    hf = transformers.AlbertForPreTraining(transformers.AlbertConfig(**config_to_hf(config)))
    ours = sum(p.numel() for p in model.parameters())
    theirs = sum(p.numel() for p in hf.parameters())  # its tied decoder counted once
    assert ours == theirs


def test_shared_layer_gets_the_sum_of_its_applications_gradients():
    """One layer applied 3 times: its gradient is the sum of the gradients three unshared copies
    (the same weights) get, each at its own depth."""
    torch.manual_seed(3)
    config = tiny_config(num_hidden_layers=3, num_hidden_groups=1, inner_group_num=1)
    shared = build_pretraining_model(config).eval()
    unshared = tiny_config(num_hidden_layers=3, num_hidden_groups=3, inner_group_num=1)
    copies = build_pretraining_model(unshared).eval()
    state = shared.state_dict()
    layer = "encoder.layers.groups.0.layers.0."
    with torch.no_grad():
        for key, value in copies.state_dict().items():  # every copy = the shared layer
            value.copy_(state[re.sub(r"groups\.\d\.", "groups.0.", key)])
    ids, mask, segments, masked = padded_batch(config)
    for model in (shared, copies):
        out = model(ids, mask, segments, masked)
        (out.mlm_logits.square().mean() + out.pair_logits.square().mean()).backward()
    name = "attention.qkv.weight"
    summed = sum(
        copies.get_parameter(f"encoder.layers.groups.{g}.layers.0.{name}").grad for g in range(3)
    )
    got = shared.get_parameter(layer + name).grad
    assert got.abs().max() > 0
    assert torch.allclose(got, summed, atol=1e-6)
    # and each application's own gradient differs (the depths see different inputs)
    first = copies.get_parameter(f"encoder.layers.groups.0.layers.0.{name}").grad
    assert not torch.allclose(first, summed)


def test_state_dict_round_trip_through_transformers_names():
    torch.manual_seed(1)
    config = tiny_config()
    for pair in (True, False):
        model = build_pretraining_model(config, with_pair_head=pair)
        sd = model.state_dict()
        back = state_dict_from_hf(state_dict_to_hf(sd, config), config)
        # AlbertForMaskedLM has no pooler (transformers initialises one when it is wanted)
        pooler = set() if pair else {"encoder.pooler.dense.weight", "encoder.pooler.dense.bias"}
        assert set(back) == set(sd) - pooler
        assert all(torch.equal(back[k], sd[k]) for k in back)


def test_save_and_read_match_transformers_from_pretrained(tmp_path):
    torch.manual_seed(2)
    config = tiny_config()
    model = build_pretraining_model(config).eval()
    save_hf_albert(model, config, tmp_path)
    hf = transformers.AlbertForPreTraining.from_pretrained(tmp_path).eval()
    loaded = read_hf_albert(tmp_path)
    assert loaded.absent == ()
    ids, mask, segments, masked = padded_batch(config)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        ours = loaded.model(ids, mask, segments, masked)
    assert (ours.mlm_logits - theirs.prediction_logits[masked]).abs().max() <= ATOL
    assert (ours.pair_logits - theirs.sop_logits).abs().max() <= ATOL


def test_presets():
    base = preset_config("albert-base")
    assert (base.embedding_size, base.hidden_size, base.num_hidden_layers) == (128, 768, 12)
    assert (base.num_hidden_groups, base.hidden_act, base.vocab_size) == (1, "gelu_new", 30000)
    model = build_pretraining_model(preset_config("albert-tiny", vocab_size=1000))
    assert model.pair_head is not None  # SOP by default
    # albert-base's encoder: ~11M parameters at a 30k vocabulary (paper Table 1: 12M)
    encoder = build_pretraining_model(base).encoder
    assert 11_000_000 < sum(p.numel() for p in encoder.parameters()) < 12_000_000
    assert {n for n in PRESETS if n.startswith("albert-")} >= {"albert-tiny", "albert-base"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"embedding_size": 64}, "embedding_size=64: must be <= hidden_size=32"),
        ({"num_hidden_groups": 3}, "num_hidden_groups=3: must divide num_hidden_layers=4"),
        ({"inner_group_num": 0}, "inner_group_num=0"),
        ({"hidden_size": 30}, "hidden_size=30: must be divisible by num_attention_heads=4"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match="config field " + field.replace("(", r"\(")):
        tiny_config(**overrides)
