"""BERT / RoBERTa numerics against transformers at tiny random sizes, same weights, eval mode."""

import pytest
import torch
import torch.nn.functional as F

from muppets.errors import ConfigError
from muppets.models.bert import BertConfig, BertModel
from muppets.models.hf import bert_state_dict_to_hf, config_to_hf
from muppets.models.registry import PRESETS, build_pretraining_model, preset_config

ATOL = 1e-5


def tiny_config(model_type="bert", **overrides):
    values = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        model_type=model_type,
    )
    if model_type == "roberta":
        values.update(pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)
    return BertConfig(**{**values, **overrides})


def padded_batch(config, lengths=(11, 6, 3), seed=0):
    """Right-padded ids (the config's pad id), two segments for BERT, ~40% of real tokens masked."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    real = torch.arange(T)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    ids = torch.randint(3, config.vocab_size, (B, T), generator=g).masked_fill(
        ~real, config.pad_token_id
    )
    segments = (torch.arange(T)[None] >= 2) & real & (config.type_vocab_size > 1)  # (B, T)
    masked = (torch.rand(B, T, generator=g) < 0.4) & real
    return ids, real.long(), segments.long(), masked


def hf_twin(model, config, attn_implementation):
    """The transformers model with our weights (tied decoder entries are tied, not loaded)."""
    import transformers

    with_pair = model.pair_head is not None
    hf_config = config_to_hf(config, with_pair_head=with_pair)
    if config.model_type == "roberta":
        hf_class, hf_config_class = transformers.RobertaForMaskedLM, transformers.RobertaConfig
    else:
        hf_config_class = transformers.BertConfig
        hf_class = transformers.BertForPreTraining if with_pair else transformers.BertForMaskedLM
    hf = hf_class(hf_config_class(**hf_config, attn_implementation=attn_implementation))
    missing, unexpected = hf.load_state_dict(
        bert_state_dict_to_hf(model.state_dict(), config), strict=False
    )
    assert all(".decoder." in k for k in missing)
    assert all(".pooler." in k for k in unexpected)  # RobertaForMaskedLM has no pooler
    return hf.eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bert_matches_transformers_bert_for_pretraining(attn):
    torch.manual_seed(0)
    config = tiny_config()
    model = build_pretraining_model(config).eval()
    hf = hf_twin(model, config, attn)
    ids, mask, segments, masked = padded_batch(config)
    with torch.no_grad():
        ours = model(ids, mask, segments, masked_positions=masked)
        hidden = model.encoder(ids, mask, segments)
        theirs = hf(
            input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True
        )
        hf_pooled = hf.bert.pooler(theirs.hidden_states[-1])
    real = mask.bool()
    assert torch.allclose(hidden[real], theirs.hidden_states[-1][real], atol=ATOL)
    assert torch.allclose(model.encoder.pooled(hidden), hf_pooled, atol=ATOL)
    assert ours.mlm_logits.shape == (int(masked.sum()), config.vocab_size)
    assert torch.allclose(ours.mlm_logits, theirs.prediction_logits[masked], atol=ATOL)
    assert torch.allclose(ours.pair_logits, theirs.seq_relationship_logits, atol=ATOL)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_roberta_matches_transformers_roberta_for_masked_lm(attn):
    torch.manual_seed(1)
    config = tiny_config("roberta")
    model = build_pretraining_model(config).eval()
    assert model.pair_head is None
    hf = hf_twin(model, config, attn)
    ids, mask, segments, masked = padded_batch(config, lengths=(9, 12, 5))
    with torch.no_grad():
        ours = model(ids, mask, None, masked_positions=masked)
        hidden = model.encoder(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    assert torch.allclose(hidden[real], theirs.hidden_states[-1][real], atol=ATOL)
    assert torch.allclose(ours.mlm_logits, theirs.logits[masked], atol=ATOL)


def test_every_layer_matches_transformers_hidden_states():
    torch.manual_seed(2)
    config = tiny_config(num_hidden_layers=3)
    model = build_pretraining_model(config).eval()
    hf = hf_twin(model, config, "eager")
    ids, mask, segments, _ = padded_batch(config, lengths=(4, 10))
    with torch.no_grad():
        ours = model.encoder.forward_all_layers(ids, mask, segments)
        theirs = hf(
            input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True
        )
    real = mask.bool()
    assert len(ours) == len(theirs.hidden_states) == config.num_hidden_layers + 1
    for a, b in zip(ours, theirs.hidden_states, strict=True):
        assert torch.allclose(a[real], b[real], atol=ATOL)
    assert torch.equal(ours[-1], model.encoder(ids, mask, segments))
    assert torch.all(ours[-1][~real] == 0)  # padding positions are never computed


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_a_sequence_alone_equals_the_same_sequence_in_a_padded_batch(model_type):
    torch.manual_seed(3)
    config = tiny_config(model_type)
    encoder = BertModel(config).eval()
    ids, mask, segments, _ = padded_batch(config, lengths=(5, 12, 8))
    with torch.no_grad():
        batched = encoder(ids, mask, segments)
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = encoder(ids[i : i + 1, :n], None, segments[i : i + 1, :n])  # no padding at all
            assert torch.allclose(alone[0], batched[i, :n], atol=ATOL)


@pytest.mark.parametrize("pre_layer_norm", [False, True])
def test_forward_at_equals_forward_at_those_positions(pre_layer_norm):
    torch.manual_seed(5)
    config = tiny_config(pre_layer_norm=pre_layer_norm)
    encoder = BertModel(config).eval()
    ids, mask, segments, masked = padded_batch(config, lengths=(9, 4, 12))
    positions = masked.clone()
    positions[:, 0] = True
    positions[1, 7] = True  # padding: not a real token, so not returned
    with torch.no_grad():
        rows = encoder.forward_at(ids, mask, segments, positions)
        full = encoder(ids, mask, segments)
    assert torch.allclose(rows, full[positions & mask.bool()], atol=ATOL)
    model = build_pretraining_model(config).eval()
    with pytest.raises(ValueError, match="real tokens"):
        model(ids, mask, segments, masked_positions=positions)


def test_pre_layer_norm_matches_a_hand_written_pre_ln_layer():
    torch.manual_seed(4)
    post = BertModel(tiny_config(num_hidden_layers=1)).eval()
    pre = BertModel(tiny_config(num_hidden_layers=1, pre_layer_norm=True)).eval()
    pre.load_state_dict(post.state_dict(), strict=False)  # same weights; pre-LN adds final_norm
    with torch.no_grad():
        pre.final_norm.weight.uniform_(0.5, 1.5)
        pre.final_norm.bias.uniform_(-0.1, 0.1)
    ids, mask, segments, _ = padded_batch(tiny_config(), lengths=(7, 7))
    with torch.no_grad():
        x = pre.forward_all_layers(ids, mask, segments)[0]  # (B, T, H) embeddings
        layer, nh = pre.layers[0], 4
        h = layer.attention_norm(x)
        q, k, v = layer.attention.qkv(h).chunk(3, dim=-1)  # 3 x (B, T, H)
        q, k, v = (t.unflatten(-1, (nh, -1)).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, D)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, nh, T, T)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)  # (B, T, H)
        x = x + layer.attention.out(attended)
        ffn = layer.feed_forward
        x = x + ffn.down(F.gelu(ffn.up(layer.feed_forward_norm(x))))
        expected = pre.final_norm(x)
        assert torch.allclose(pre(ids, mask, segments), expected, atol=ATOL)
        assert (pre(ids, mask, segments) - post(ids, mask, segments)).abs().max() > 0.1


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="hidden_size=30.*num_attention_heads=4"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="hidden_dropout_prob"):
        BertConfig(hidden_dropout_prob=1.5)
    with pytest.raises(ConfigError, match="hidden_act"):
        BertConfig(hidden_act="tanh")
    with pytest.raises(ConfigError, match="bert-tiny.*roberta-base"):
        preset_config("bert-huge")
    with pytest.raises(ConfigError, match="hiden_size"):
        preset_config("bert-tiny", hiden_size=64)


def test_presets_have_the_published_sizes():
    assert preset_config("bert-mini", vocab_size=8000).vocab_size == 8000
    assert preset_config("bert-tiny", hidden_size=64).intermediate_size == 256
    with torch.device("meta"):  # no memory, no time: count parameters only
        sizes = {
            name: sum(p.numel() for p in BertModel(preset_config(name)).parameters())
            for name in PRESETS
            if PRESETS[name]["model_type"] != "xlnet"  # XLNet: test_xlnet_hf.py
        }
    # As transformers' BertModel("bert-base-uncased"), RobertaModel("roberta-base"), with pooler.
    assert sizes["bert-base"] == 109_482_240
    assert sizes["roberta-base"] == 124_645_632
    assert sizes["bert-tiny"] < sizes["bert-mini"] < sizes["bert-small"] < sizes["bert-medium"]


def test_config_dict_round_trip_and_hf_keys():
    config = tiny_config("roberta", pre_layer_norm=True)
    assert BertConfig.from_dict(config.to_dict()) == config
    hf_dict = {
        "architectures": ["RobertaForMaskedLM"],
        "hidden_size": 32,
        "num_attention_heads": 4,
        "use_cache": True,
        "bos_token_id": 0,
    }
    read = BertConfig.from_dict(hf_dict)
    assert (read.model_type, read.pad_token_id, read.vocab_size, read.hidden_size) == (
        "roberta",
        1,
        50265,
        32,
    )
    assert read.max_sequence_length == 512 - 2
