"""ELECTRA numerics against transformers at tiny random sizes (E != H for both towers), the HF
conversion both ways, and the config errors."""

import pytest
import torch

from muppets.errors import ConfigError, InputError
from muppets.models.electra import ElectraConfig, ElectraPretrainingModel
from muppets.models.hf_electra import (
    config_to_hf,
    load_hf_electra,
    save_hf_electra,
    state_dict_from_hf,
    state_dict_to_hf,
)
from muppets.models.registry import PRESETS, build_encoder, preset_config
from tests.test_bert_parity import ATOL, padded_batch


def tiny_config(**overrides):
    """Discriminator H 32 (4 heads), generator G 16 (1 head), embeddings E 24: both project."""
    values = dict(
        vocab_size=97,
        embedding_size=24,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        generator_hidden_size=0.5,
    )
    return ElectraConfig(**{**values, **overrides})


def hf_towers(model, config, attn="eager"):
    """transformers' ElectraForPreTraining and ElectraForMaskedLM holding our weights."""
    import transformers

    state = model.state_dict()
    towers = []
    for tower, cls in (
        ("discriminator", transformers.ElectraForPreTraining),
        ("generator", transformers.ElectraForMaskedLM),
    ):
        hf_config = transformers.ElectraConfig(
            **config_to_hf(config, tower), attn_implementation=attn
        )
        hf = cls(hf_config)
        missing, unexpected = hf.load_state_dict(
            state_dict_to_hf(state, config, tower), strict=False
        )
        assert not unexpected and all(k == "generator_lm_head.weight" for k in missing)
        towers.append(hf.eval())
    return towers


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_both_towers_match_transformers(attn):
    torch.manual_seed(0)
    config = tiny_config()
    model = ElectraPretrainingModel(config).eval()
    assert model.generator.embeddings is model.discriminator.embeddings  # one shared module
    disc, gen = hf_towers(model, config, attn)
    ids, mask, segments, masked = padded_batch(config)
    real = mask.bool()
    with torch.no_grad():
        ours_disc = model.discriminator_head(model.discriminator(ids, mask, segments))  # (B, T)
        theirs_disc = disc(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
        rows = model.generator.forward_at(ids, mask, segments, masked)
        ours_gen = model.generator_head(rows, model.generator.embeddings.word_embeddings.weight)
        theirs_gen = gen(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
    assert ours_gen.shape == (int(masked.sum()), config.vocab_size)
    assert (ours_disc[real] - theirs_disc[real]).abs().max() <= ATOL
    assert (ours_gen - theirs_gen[masked]).abs().max() <= ATOL


def test_joint_forward_is_generator_then_discriminator_on_the_samples():
    torch.manual_seed(1)
    config = tiny_config()
    model = ElectraPretrainingModel(config).eval()
    disc, gen = hf_towers(model, config)
    original, mask, segments, masked = padded_batch(config, lengths=(12, 7, 9))
    masked_ids = original.masked_fill(masked, 3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = model(masked_ids, mask, segments, masked, original, 1.0, g)
        theirs_gen = gen(input_ids=masked_ids, attention_mask=mask, token_type_ids=segments)
        fake = original.clone()
        fake[masked] = out.sampled
        theirs_disc = disc(input_ids=fake, attention_mask=mask, token_type_ids=segments)
    real = mask.bool()
    assert (out.mlm_logits - theirs_gen.logits[masked]).abs().max() <= ATOL
    assert (out.disc_logits - theirs_disc.logits[real]).abs().max() <= ATOL
    assert torch.equal(out.replaced, fake.ne(original)[real])
    # The same generator state draws the same samples; another draws others.
    again = model(
        masked_ids, mask, segments, masked, original, 1.0, torch.Generator().manual_seed(0)
    )
    other = model(
        masked_ids, mask, segments, masked, original, 1.0, torch.Generator().manual_seed(1)
    )
    assert torch.equal(again.sampled, out.sampled) and not torch.equal(other.sampled, out.sampled)


def test_round_trip_through_hf_names_and_files_is_the_identity(tmp_path):
    import transformers

    torch.manual_seed(2)
    config = tiny_config()
    model = ElectraPretrainingModel(config)
    state = model.state_dict()
    back = state_dict_from_hf(
        state_dict_to_hf(state, config, "discriminator"),
        state_dict_to_hf(state, config, "generator"),
        config,
    )
    no_pooler = {k for k in state if ".pooler." not in k}
    assert set(back) == no_pooler  # the generator's embeddings: the discriminator's, checked
    assert all(torch.equal(back[k], state[k]) for k in back)
    save_hf_electra(model, config, tmp_path)
    loaded_config, loaded = load_hf_electra(tmp_path)
    assert loaded_config == config
    loaded_state = loaded.state_dict()
    assert all(torch.equal(loaded_state[k], state[k]) for k in no_pooler)
    # transformers reads what we wrote, and what it writes we read.
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path).eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    disc.save_pretrained(tmp_path / "hf")
    gen.save_pretrained(tmp_path / "hf" / "generator")
    again_config, again = load_hf_electra(tmp_path / "hf")
    assert again_config == config
    again_state = again.state_dict()
    assert all(torch.equal(again_state[k], state[k]) for k in no_pooler)


def test_a_discriminator_alone_loads_without_a_generator(tmp_path):
    torch.manual_seed(3)
    config = tiny_config()
    model = ElectraPretrainingModel(config, with_generator=False)
    assert save_hf_electra(model, config, tmp_path) == [tmp_path]
    loaded_config, loaded = load_hf_electra(tmp_path)
    assert loaded.generator is None and loaded_config == config
    with pytest.raises(ValueError, match="no generator"):
        loaded(*padded_batch(config)[:2], None, None, None)


def test_towers_whose_embeddings_disagree_are_refused(tmp_path):
    torch.manual_seed(4)
    config = tiny_config()
    model = ElectraPretrainingModel(config)
    save_hf_electra(model, config, tmp_path)
    other = ElectraPretrainingModel(config)  # other random embeddings
    save_hf_electra(other, config, tmp_path / "other")
    (tmp_path / "generator").rename(tmp_path / "own")
    (tmp_path / "other" / "generator").rename(tmp_path / "generator")
    with pytest.raises(InputError, match="embeddings disagree"):
        load_hf_electra(tmp_path)
    with pytest.raises(InputError, match="ELECTRA generator"):
        load_hf_electra(tmp_path / "generator")


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="generator_hidden_size=1.5.*larger than the disc"):
        tiny_config(generator_hidden_size=1.5)
    with pytest.raises(ConfigError, match="generator_layers=2"):
        tiny_config(generator_layers=2)
    with pytest.raises(ConfigError, match="embedding_size=64: must be <= hidden_size=32"):
        tiny_config(embedding_size=64)
    with pytest.raises(ConfigError, match="embedding_size=0"):
        tiny_config(embedding_size=0)
    with pytest.raises(ConfigError, match="generator: config field hidden_size=200.*heads=3"):
        ElectraConfig(hidden_size=256, generator_hidden_size=200 / 256)
    with pytest.raises(ConfigError, match="generator_hidden_size=0.001.*size 0"):
        tiny_config(generator_hidden_size=0.001)


def test_presets_have_the_published_sizes():
    small = preset_config("electra-small")
    g = small.generator_config()
    # The paper's Small: generator 1/4 -> hidden 64, 1 head (get_generator_config), FFN 256.
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size) == (64, 1, 256)
    # The released google/electra-small-generator: hidden 256, 4 heads, FFN 1024, E 128.
    g = preset_config("electra-small", generator_hidden_size=1.0).generator_config()
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size) == (256, 4, 1024)
    # google/electra-base-generator: 1/3 of 768.
    assert preset_config("electra-base").generator_config().hidden_size == 256
    with torch.device("meta"):
        sizes = {
            n: sum(p.numel() for p in build_encoder(preset_config(n)).parameters())
            for n in PRESETS
            if n.startswith("electra")
        }
    # transformers' ElectraModel(ElectraConfig()), the small discriminator: 13,483,008 parameters;
    # ours adds the pooler (256 x 256 + 256) that fine-tuning starts from.
    assert sizes["electra-small"] == 13_483_008 + 65_792
    assert sizes["electra-tiny"] < sizes["electra-mini"] < sizes["electra-small"]
