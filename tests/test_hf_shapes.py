"""Checkpoints as transformers writes them: every pretraining shape of BERT and RoBERTa (with or
without pooler, MLM head, NSP head), built by transformers at a tiny random size, saved with
save_pretrained beside a WordPiece tokenizer, converted by `muppets convert --to muppets`, loaded
and compared with transformers' own outputs; converted back with `--to hf` and loaded by
transformers again. What a shape lacks is said once, where a command needs it."""

import json

import pytest
import torch
from conftest import small_hf_sizes
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.training.pretrained import load_checkpoint

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SHAPES = [
    ("bert", "BertForPreTraining"),
    ("bert", "BertForMaskedLM"),
    ("bert", "BertModel"),
    ("bert", "BertForNextSentencePrediction"),
    ("roberta", "RobertaForMaskedLM"),
    ("roberta", "RobertaModel"),
]


def hf_config(model_type, tokenizer, **extra):
    """A config no other test uses: 2 layers, hidden 32, the tokenizer's vocabulary."""
    sizes = small_hf_sizes(tokenizer, **extra)
    if model_type == "electra":
        return transformers.ElectraConfig(max_position_embeddings=36, **sizes)
    if model_type == "roberta":
        return transformers.RobertaConfig(
            max_position_embeddings=40, type_vocab_size=1, layer_norm_eps=1e-5, **sizes
        )
    return transformers.BertConfig(max_position_embeddings=36, **sizes)


def save_hf(directory, model_type, class_name, tokenizer, seed=0, **extra):
    """transformers' model of that class, random (its own init), saved with the tokenizer."""
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(hf_config(model_type, tokenizer, **extra)).eval()
    model.save_pretrained(directory)
    tokenizer.save(directory)
    return model


def batch(tokenizer):
    """Two right-padded texts, the second a pair with [MASK]s: ids, mask, segments, masked."""
    texts = [("the cat sat on the mat .", None), ("a dog [MASK] in the park", "the sun [MASK] .")]
    rows = [tokenizer.encode_pair(a, b) for a, b in texts]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_id)
    segments, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for n, (row, types) in enumerate(rows):
        ids[n, : len(row)], segments[n, : len(row)], mask[n, : len(row)] = (
            torch.tensor(row),
            torch.tensor(types),
            1,
        )
    return ids, mask, segments, ids.eq(tokenizer.mask_id)


def hf_outputs(model, ids, mask, segments):
    """(last hidden states, MLM logits or None, NSP logits or None) of any transformers shape."""
    segments = segments if model.config.type_vocab_size > 1 else torch.zeros_like(segments)
    with torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True
        )
    hidden = out.hidden_states[-1]
    mlm = getattr(out, "prediction_logits", None)
    if mlm is None and "MaskedLM" in type(model).__name__:
        mlm = out.logits
    nsp = getattr(out, "seq_relationship_logits", None)
    if "NextSentence" in type(model).__name__:
        nsp = out.logits
    return hidden, mlm, nsp


def convert_args(source, out, to):
    return ["convert", "--input", str(source), "--out", str(out), "--to", to]


def convert(source, out, to, capsys):
    code = main(convert_args(source, out, to))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.splitlines()


def close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("model_type, class_name", SHAPES)
def test_each_shape_converts_loads_equal_and_converts_back(
    tmp_path, tiny_tokenizer, capsys, model_type, class_name, one_thread
):
    hf = save_hf(tmp_path / "hf", model_type, class_name, tiny_tokenizer)
    lines = convert(tmp_path / "hf", tmp_path / "ours", "muppets", capsys)
    has_pooler = any("pooler." in k for k in load_file(tmp_path / "hf" / "model.safetensors"))
    # A missing pooler is initialised as transformers does, and said once; nothing else is said.
    said = f"convert: no pooler in {tmp_path / 'hf'}: initialised as transformers does (normal, "
    assert [line for line in lines if "pooler" in line] == (
        [] if has_pooler else [said + "std 0.02)"]
    )
    assert len(lines) == (1 if has_pooler else 2)
    model, _, tokenizer, setup, _ = load_checkpoint(tmp_path / "ours")
    assert setup is None and tokenizer.vocab_size == tiny_tokenizer.vocab_size
    ids, mask, segments, masked = batch(tokenizer)
    hidden, mlm, nsp = hf_outputs(hf, ids, mask, segments)
    segments = segments if model_type == "bert" else torch.zeros_like(segments)
    with torch.no_grad():
        ours = model.encoder(ids, mask, segments)
        real = mask.bool()
        assert close(ours[real], hidden[real])
        assert (model.mlm_head is not None) == (mlm is not None)
        assert (model.pair_head is not None) == (nsp is not None)
        if mlm is not None:
            assert close(model(ids, mask, segments, masked).mlm_logits, mlm[masked])
        if nsp is not None:
            assert close(model.pair_head(model.encoder.pooled(ours)), nsp)
        if has_pooler:
            assert close(model.encoder.pooled(ours), hf.base_model.pooler(hidden))

    convert(tmp_path / "ours", tmp_path / "back", "hf", capsys)
    values = json.loads((tmp_path / "back" / "config.json").read_text())
    back = getattr(transformers, values["architectures"][0]).from_pretrained(tmp_path / "back")
    assert type(back) is type(hf)
    keys = set(load_file(tmp_path / "back" / "model.safetensors"))
    original = set(load_file(tmp_path / "hf" / "model.safetensors"))
    # the pooler we initialised travels back (transformers ignores it where the class has none)
    assert {k for k in keys if "pooler." not in k} == {k for k in original if "pooler." not in k}
    for got, want in zip(
        hf_outputs(back.eval(), ids, mask, segments), (hidden, mlm, nsp), strict=True
    ):
        assert (got is None and want is None) or close(got, want)


def test_fill_mask_on_an_encoder_alone_says_there_is_no_mlm_head(
    tmp_path, tiny_tokenizer, capsys, cli_error, one_thread
):
    save_hf(tmp_path / "hf", "bert", "BertModel", tiny_tokenizer)
    convert(tmp_path / "hf", tmp_path / "ours", "muppets", capsys)
    for directory in (tmp_path / "hf", tmp_path / "ours"):  # as it comes, and converted
        line = cli_error(["predict", "fill-mask", "the cat [MASK] .", "--model", str(directory)])
        assert line == f"muppets: error: {directory}: no MLM head: fill-mask is not available"
    # the encoder itself is whole: extract reads it
    save_hf(tmp_path / "mlm", "bert", "BertForMaskedLM", tiny_tokenizer)
    assert main(["predict", "fill-mask", "the cat [MASK] .", "--model", str(tmp_path / "mlm")]) == 0
    assert "[MASK] #1:" in capsys.readouterr().out


def test_a_vocabulary_larger_than_the_tokenizer_names_config_json(
    tmp_path, tiny_tokenizer, capsys, cli_error
):
    save_hf(tmp_path / "hf", "bert", "BertForMaskedLM", tiny_tokenizer)
    config = tmp_path / "hf" / "config.json"
    size = tiny_tokenizer.vocab_size
    config.write_text(json.dumps({**json.loads(config.read_text()), "vocab_size": size + 4}))
    capsys.readouterr()  # transformers' progress bar
    line = cli_error(convert_args(tmp_path / "hf", tmp_path / "o", "muppets"))
    assert line == (
        f"muppets: error: {config}: vocab_size={size + 4} is larger than the tokenizer's {size} "
        "tokens: "
        "they come from different vocabularies"
    )
    assert not (tmp_path / "o").exists()  # nothing left behind


@pytest.mark.parametrize("model_type", ["gpt2", "deberta-v2"])
def test_an_unknown_model_type_names_the_field_and_the_file(
    tmp_path, tiny_tokenizer, cli_error, model_type
):
    """Before any weights are read: only config.json and the tokenizer are here."""
    directory = tmp_path / "hf"
    tiny_tokenizer.save(directory)
    values = {"architectures": ["SomeModel"], "model_type": model_type, "vocab_size": 60}
    (directory / "config.json").write_text(json.dumps(values))
    line = cli_error(convert_args(directory, tmp_path / "o", "muppets"))
    assert line.startswith(f"muppets: error: {directory / 'config.json'}: ")
    assert f"model_type={model_type!r}" in line and "bert, roberta" in line


@pytest.mark.parametrize("class_name", ["ElectraForPreTraining", "ElectraModel"])
def test_electra_discriminators_convert_with_transformers_hidden_states(
    tmp_path, tiny_tokenizer, capsys, class_name, one_thread
):
    """ELECTRA's discriminator with or without its head (E = 16 < H = 32: projected embeddings);
    the generator, when present, lives in generator/ (test_electra_parity.py)."""
    extra = {"embedding_size": 16}
    hf = save_hf(tmp_path / "hf", "electra", class_name, tiny_tokenizer, **extra)
    lines = convert(tmp_path / "hf", tmp_path / "ours", "muppets", capsys)
    said = f"convert: no discriminator head in {tmp_path / 'hf'}: initialised as transformers does"
    headless = class_name == "ElectraModel"
    assert lines[1:] == ([said + " (normal, std 0.02)"] if headless else [])
    model = load_checkpoint(tmp_path / "ours").model
    ids, mask, segments, _ = batch(tiny_tokenizer)
    hidden, _, _ = hf_outputs(hf, ids, mask, segments)
    with torch.no_grad():
        ours = model.encoder(ids, mask, segments)
        real = mask.bool()
        assert close(ours[real], hidden[real])
        if class_name == "ElectraForPreTraining":
            logits = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
            assert close(model.discriminator_head(ours)[real], logits[real])
