"""XLNet checkpoints through `muppets convert` both ways: transformers' XLNetLMHeadModel and
XLNetModel directories (beside a WordPiece tokenizer) to ours and back, and our xlnet-tiny preset
to transformers, with equal logits (permutation inputs and memories included); bad config values
refused in one line naming the file and the field."""

import json

import pytest
import torch

from muppets.cli.main import main
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_checkpoint

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
B, T = 2, 9


def hf_model(class_name, tokenizer, seed=0):
    torch.manual_seed(seed)
    config = transformers.XLNetConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layer=2,
        n_head=4,
        d_inner=48,
        mem_len=6,
        clamp_len=5,
        pad_token_id=tokenizer.pad_id,
        initializer_range=0.2,
    )
    return getattr(transformers, class_name)(config).eval()


def inputs(vocab_size):
    """Left-padded ids with segments, an XLNet perm_mask (a random order per row) and a
    target_mapping of 3 predictions."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, :2] = 0
    segments = torch.tensor([[0] * 4 + [1] * 4 + [2]] * B)
    order = torch.stack([torch.randperm(T, generator=g) for _ in range(B)])
    perm_mask = (order[:, None, :] >= order[:, :, None]).float()
    mapping = torch.zeros(B, 3, T)
    mapping[:, torch.arange(3), torch.tensor([3, 5, 8])] = 1.0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}, {
        "perm_mask": perm_mask,
        "target_mapping": mapping,
    }


def theirs_outputs(model, vocab_size):
    """(plain last layer or logits, then those of the next segment with mems and the two
    streams)."""
    plain, permutation = inputs(vocab_size)
    with torch.no_grad():
        first = model(**plain, use_mems=True)
        second = model(**plain, **permutation, mems=first.mems, use_mems=True)
    pick = (lambda o: o.logits) if hasattr(first, "logits") else (lambda o: o.last_hidden_state)
    return pick(first), pick(second)


def ours_outputs(model, vocab_size):
    plain, permutation = inputs(vocab_size)
    with torch.no_grad():
        first = model(**plain, use_mems=True)
        second = model(**plain, **permutation, mems=first.mems, use_mems=True)
    pick = (lambda o: o.logits) if model.mlm_head is not None else (lambda o: o.hidden)
    return pick(first), pick(second)


def convert(source, out, to, capsys):
    code = main(["convert", "--input", str(source), "--out", str(out), "--to", to])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.splitlines()


def assert_all_close(got, want):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("class_name", ["XLNetLMHeadModel", "XLNetModel"])
def test_transformers_directories_convert_both_ways(tmp_path, tiny_tokenizer, capsys, class_name):
    hf = hf_model(class_name, tiny_tokenizer)
    hf.save_pretrained(tmp_path / "hf")
    tiny_tokenizer.save(tmp_path / "hf")
    V = tiny_tokenizer.vocab_size
    want = theirs_outputs(hf, V)
    assert len(convert(tmp_path / "hf", tmp_path / "ours", "muppets", capsys)) == 1
    model, config, _, setup, absent = load_checkpoint(tmp_path / "ours")
    assert setup is None and absent == () and (config.mem_len, config.clamp_len) == (6, 5)
    assert (model.mlm_head is not None) == (class_name == "XLNetLMHeadModel")
    assert_all_close(ours_outputs(model, V), want)
    convert(tmp_path / "ours", tmp_path / "back", "hf", capsys)
    values = json.loads((tmp_path / "back" / "config.json").read_text())
    assert values["architectures"] == [class_name]
    back = getattr(transformers, class_name).from_pretrained(tmp_path / "back").eval()
    assert_all_close(theirs_outputs(back, V), want)


def test_our_preset_converts_to_transformers(tmp_path, tiny_tokenizer, capsys):
    V = tiny_tokenizer.vocab_size
    config = preset_config("xlnet-tiny", vocab_size=V, d_model=32, n_head=4, mem_len=0)
    assert config.d_inner == 128 and config.n_layer == 2
    torch.manual_seed(0)
    model = build_pretraining_model(config).eval()
    with torch.no_grad():
        model.mlm_head.bias.normal_()  # a bias that transformers must read back
    save_pretrained(tmp_path / "ours", model, config.to_dict())
    tiny_tokenizer.save(tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "hf", "hf", capsys)
    hf = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    plain, permutation = inputs(V)
    with torch.no_grad():
        want = hf(**plain, **permutation).logits
        got = model(**plain, **permutation).logits
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # mem_len 0 (no memory) has no transformers value: no memories are kept there either
    values = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (values["mem_len"], values["use_mems_eval"], values["clamp_len"]) == (None, False, -1)
    convert(tmp_path / "hf", tmp_path / "back", "muppets", capsys)
    assert load_checkpoint(tmp_path / "back").config == config


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("mem_len", -3, "hf"),
        ("reuse_len", -1, "hf"),
        ("clamp_len", -1, "ours"),
        ("n_head", 5, "hf"),
    ],
)
def test_bad_config_values_are_one_line(
    tmp_path, tiny_tokenizer, cli_error, capsys, field, value, where
):
    """A negative mem_len / reuse_len, our clamp_len below 0 (transformers' -1 means no clamp,
    so it is read as 0), heads that do not divide d_model."""
    directory = tmp_path / where
    if where == "hf":
        hf_model("XLNetLMHeadModel", tiny_tokenizer).save_pretrained(directory)
    else:
        config = preset_config("xlnet-tiny", vocab_size=tiny_tokenizer.vocab_size)
        save_pretrained(directory, build_pretraining_model(config), config.to_dict())
    tiny_tokenizer.save(directory)
    values = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**values, field: value}))
    capsys.readouterr()  # transformers' progress bars of save_pretrained
    line = cli_error(["convert", "--input", str(directory), "--out", str(tmp_path / "o")])
    assert str(directory / "config.json") in line and f"{field}={value}" in line
    assert not (tmp_path / "o").exists()


def test_base_preset_has_the_released_size():
    """xlnet-base-cased's shape: as many parameters as transformers' XLNetLMHeadModel of it."""
    config = preset_config("xlnet-base-cased")
    hf_config = transformers.XLNetConfig(
        vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072
    )
    with torch.device("meta"):
        ours = sum(p.numel() for p in build_pretraining_model(config).parameters())
        theirs = sum(p.numel() for p in transformers.XLNetLMHeadModel(hf_config).parameters())
    assert ours == theirs == 116_750_336
