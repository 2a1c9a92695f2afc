"""ALBERT checkpoints as transformers writes them (AlbertForPreTraining, AlbertForMaskedLM) beside
a SentencePiece unigram tokenizer.json built here with `tokenizers` and saved by
AlbertTokenizerFast: `muppets convert` both ways with transformers' logits, one-command
fine-tuning, and the bad inputs (E > H, groups that do not divide the layers, a WordPiece
tokenizer) refused in one line naming the file and field."""

import contextlib
import io
import json
import random

import pytest
import torch
from conftest import BERT_TINY, NOUNS, sentence, write_tasks
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import Unigram

from muppets.cli.main import main
from muppets.tokenization.unigram import ALBERT_SPECIAL_TOKENS, UnigramTokenizer
from muppets.training.pretrained import load_checkpoint

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


def unigram_tokenizer(texts) -> Tokenizer:
    """A SentencePiece-style unigram model (lowercasing, "▁" word starts) with ALBERT's specials:
    every word of the texts is a piece ("▁word", log-probability -5) and so is every character
    (-10: the fallback), as a SentencePiece model of a larger corpus would have them."""
    words = sorted({w for text in texts for w in text.lower().split()})
    characters = sorted({c for w in words for c in w})
    pieces = [(token, 0.0) for token in ALBERT_SPECIAL_TOKENS]
    pieces += [("\u2581" + w, -5.0) for w in words] + [("\u2581", -10.0)]
    pieces += [(c, -10.0) for c in characters if "\u2581" + c not in dict(pieces)]
    backend = Tokenizer(Unigram(pieces, unk_id=1))
    backend.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581")
    backend.decoder = decoders.Metaspace(replacement="\u2581")
    return backend


@pytest.fixture(scope="module")
def albert_workspace(tmp_path_factory):
    """Task files; an AlbertForPreTraining and an AlbertForMaskedLM directory (E 16 -> H 32, two
    groups of one layer over 4 layers) with the unigram tokenizer saved by AlbertTokenizerFast."""
    root = tmp_path_factory.mktemp("albert")
    rng = random.Random(0)
    write_tasks(root, rng)
    texts = [sentence(rng, w) for w in ("good", "bad", "so") for _ in range(20)] + NOUNS
    fast = transformers.AlbertTokenizerFast(tokenizer_object=unigram_tokenizer(texts))
    directories = {}
    for seed, name in enumerate(("AlbertForPreTraining", "AlbertForMaskedLM")):
        torch.manual_seed(seed)
        config = transformers.AlbertConfig(
            vocab_size=len(fast),
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=4,
            num_hidden_groups=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=128,
            pad_token_id=fast.pad_token_id,
        )
        directory = root / name
        getattr(transformers, name)(config).save_pretrained(directory)
        fast.save_pretrained(directory)
        directories[name] = directory
    return root, directories


def hf_logits(directory, ids, mask, segments):
    name = json.loads((directory / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, name).from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    mlm = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
    return mlm, getattr(out, "sop_logits", None)


def batch(tokenizer):
    rows = [
        tokenizer.encode_pair("the movie was good", "a [MASK] film"),
        tokenizer.encode_pair("so bad"),
    ]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((2, T), tokenizer.pad_id)
    segments, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for n, (row, types) in enumerate(rows):
        ids[n, : len(row)], segments[n, : len(row)] = torch.tensor(row), torch.tensor(types)
        mask[n, : len(row)] = 1
    masked = mask.bool() & (torch.arange(T) % 3 == 1)
    return ids, mask, segments, masked


def test_the_unigram_tokenizer_reads_as_transformers_does(albert_workspace):
    _, directories = albert_workspace
    directory = directories["AlbertForPreTraining"]
    ours = load_checkpoint(directory).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    assert isinstance(ours, UnigramTokenizer)
    assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        theirs.pad_token_id,
        theirs.cls_token_id,
        theirs.sep_token_id,
        theirs.mask_token_id,
    )
    text = "The movie was really GOOD, and the ending so-so"
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    ids, types = ours.encode_pair("a film", "the plot")
    a, b = ours.encode("a film"), ours.encode("the plot")
    assert ids == [ours.cls_id, *a, ours.sep_id, *b, ours.sep_id]
    assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    # whole-word units: a piece continues a word unless it starts with "▁" (google's rule)
    continuation = ours.continuation_mask()
    for token, i in theirs.get_vocab().items():
        assert continuation[i] == (token not in ALBERT_SPECIAL_TOKENS and token[0] != "\u2581")


@pytest.mark.parametrize("name", ["AlbertForPreTraining", "AlbertForMaskedLM"])
def test_convert_both_ways_keeps_transformers_logits(albert_workspace, tmp_path, capsys, name):
    _, directories = albert_workspace
    source = directories[name]
    capsys.readouterr()  # transformers' progress bars
    args = ["convert", "--input", str(source), "--out", str(tmp_path / "ours"), "--to", "muppets"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    note = f"convert: no pooler in {source}: initialised as transformers does (normal, std 0.02)"
    assert lines[1:] == ([] if name == "AlbertForPreTraining" else [note])
    loaded = load_checkpoint(tmp_path / "ours")
    ids, mask, segments, masked = batch(loaded.tokenizer)
    mlm, sop = hf_logits(source, ids, mask, segments)
    with torch.no_grad():
        ours = loaded.model(ids, mask, segments, masked)
    assert (ours.mlm_logits - mlm[masked]).abs().max() <= ATOL
    assert (sop is None) == (ours.pair_logits is None)
    if sop is not None:
        assert (ours.pair_logits - sop).abs().max() <= ATOL
    back = tmp_path / "back"
    args = ["convert", "--input", str(tmp_path / "ours"), "--out", str(back), "--to", "hf"]
    assert main(args) == 0
    assert json.loads((back / "config.json").read_text())["architectures"] == [name]
    mlm_back, sop_back = hf_logits(back, ids, mask, segments)
    assert (mlm_back - mlm).abs().max() <= ATOL
    if sop is not None:
        assert (sop_back - sop).abs().max() <= ATOL
    assert transformers.AutoTokenizer.from_pretrained(back).encode("so good") == (
        transformers.AutoTokenizer.from_pretrained(source).encode("so good")
    )


def test_a_transformers_albert_fine_tunes_with_one_command(albert_workspace, tmp_path, capsys):
    root, directories = albert_workspace
    out = tmp_path / "sst2"
    args = ["--task", "sst2", "--data", str(root / "glue")]
    args += ["--model", str(directories["AlbertForPreTraining"]), "--out", str(out)]
    args += ["--epochs", "6", "--early-stopping-patience", "0", *BERT_TINY]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["finetune", *args]) == 0
    assert "sst2 seed 1: dev accuracy 87.50" in printed.getvalue()  # ("good" vs "bad" rows)
    saved = json.loads((out / "seed-1" / "tokenizer.json").read_text())
    assert saved["model"]["type"] == "Unigram"  # the checkpoint's tokenizer travels along
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(root / "glue")]) == 0
    precision, scores = capsys.readouterr().out.strip().splitlines()  # the arithmetic, first
    assert (
        precision.startswith("precision: ") and scores == "sst2 dev (16 examples): accuracy 0.8750"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"embedding_size": 64},
            "config field embedding_size=64: must be <= hidden_size=32 "
            "(ALBERT factorises the embeddings: E -> H projects up)",
        ),
        (
            {"num_hidden_groups": 3},
            "config field num_hidden_groups=3: must divide num_hidden_layers=4 "
            "(each group is applied to L / G consecutive layers)",
        ),
    ],
)
def test_impossible_sizes_name_config_json_and_the_field(
    albert_workspace, tmp_path, cli_error, change, message
):
    _, directories = albert_workspace
    directory = tmp_path / "bad"
    directory.mkdir()
    source = directories["AlbertForPreTraining"]
    for f in source.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    config = directory / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    line = cli_error(["convert", "--input", str(directory), "--out", str(tmp_path / "o")])
    assert line == f"muppets: error: {config}: {message}"
    assert not (tmp_path / "o").exists()


def test_a_wordpiece_tokenizer_in_an_albert_checkpoint_is_refused(
    albert_workspace, tiny_tokenizer, tmp_path, cli_error
):
    root, directories = albert_workspace
    directory = tmp_path / "albert-with-wordpiece"
    directory.mkdir()
    source = directories["AlbertForPreTraining"]
    for name in ("config.json", "model.safetensors"):
        (directory / name).write_bytes((source / name).read_bytes())
    tiny_tokenizer.save(directory)
    settings = directory / "tokenizer_config.json"  # as a user would mislabel it
    settings.write_text(
        json.dumps({**json.loads(settings.read_text()), "tokenizer_class": "AlbertTokenizer"})
    )
    config = directory / "config.json"
    values = json.loads(config.read_text())
    config.write_text(json.dumps({**values, "vocab_size": tiny_tokenizer.vocab_size}))
    args = ["--task", "sst2", "--data", str(root / "glue"), "--model", str(directory)]
    line = cli_error(["finetune", *args, "--out", str(tmp_path / "out")])
    assert line == (
        f"muppets: error: {directory / 'tokenizer.json'}: a WordPiece tokenizer in an ALBERT "
        "checkpoint: ALBERT's is SentencePiece (a tokenizer.json with a Unigram model, as "
        "AlbertTokenizerFast saves it)"
    )


def test_fill_mask_reads_the_unigram_tokenizer(albert_workspace, capsys):
    _, directories = albert_workspace
    directory = directories["AlbertForMaskedLM"]
    capsys.readouterr()
    assert main(["predict", "fill-mask", "the movie was [MASK] .", "--model", str(directory)]) == 0
    line = capsys.readouterr().out.splitlines()[2]  # after the precision and the text
    tokenizer = load_checkpoint(directory).tokenizer
    ids = torch.tensor([tokenizer.encode_pair("the movie was [MASK] .")[0]])
    model = transformers.AlbertForMaskedLM.from_pretrained(directory).eval()
    with torch.no_grad():
        probs = model(input_ids=ids).logits[ids.eq(tokenizer.mask_id)].softmax(-1)[0]  # (V,)
    top = int(probs.argmax())
    assert line.startswith(f"  [MASK] #1: {tokenizer.id_to_token(top)} {float(probs[top]):.3f}  ")
