"""XLNet through the project's heads: fine-tune (a preset or a pretrain-xlnet run) and evaluate a
classifier read at the last token (<cls> at the end), QA with no-answer at <cls>, tagging, extract,
serve == predict, convert both ways with transformers' XLNetFor* models (logits <= 1e-5, the
project's right padding against transformers' left padding), export refused in one line."""

import contextlib
import io
import json
import random

import pytest
import torch
from conftest import CITIES, CONTEXT, PEOPLE, sentence, write_tasks
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.models.hf_xlnet import config_to_hf, state_dict_to_hf
from muppets.models.registry import preset_config
from muppets.models.xlnet import XLNetLMHeadModel, XLNetModel
from muppets.tokenization.families import train_any
from muppets.tokenization.styles import STYLES
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_finetuned
from tests.test_xlnet_recipe import run, weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def xlnet_workspace(tmp_path_factory):
    """The fine-tuning task files and a SentencePiece tokenizer in XLNet's style (<sep> <cls>
    at the end, segment 2 for <cls>, pad id 5)."""
    root = tmp_path_factory.mktemp("xlnet-finetune")
    rng = random.Random(0)
    write_tasks(root, rng)
    texts = [sentence(rng, w) for w in ("good", "bad", "so") for _ in range(30)]
    texts += [CONTEXT.format(p=p, c=c) for p in PEOPLE for c in CITIES]
    texts += ["who owns the moon ? where does went to live", ". . ."]
    tokenizer = train_any(STYLES["xlnet"], texts, vocab_size=120, min_frequency=1)
    tokenizer.save(root / "tok")
    return root, tokenizer


@pytest.fixture(scope="module")
def xlnet_sst2(xlnet_workspace, tmp_path_factory):
    """xlnet-tiny fine-tuned on the sst2-like files through the CLI (a preset from scratch)."""
    root, _ = xlnet_workspace
    out = tmp_path_factory.mktemp("xlnet-sst2") / "sst2"
    args = ["--task", "sst2", "--data", str(root / "glue"), "--model", "xlnet-tiny"]
    args += ["--tokenizer", str(root / "tok"), "--out", str(out), "--epochs", "6"]
    args += ["--early-stopping-patience", "0", "--learning-rate", "1e-3", "--batch-size", "8"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", *args]) == 0
    return out


def test_finetune_a_preset_from_its_last_token_and_evaluate(xlnet_workspace, xlnet_sst2, capsys):
    root, tokenizer = xlnet_workspace
    run = xlnet_sst2 / "seed-1"
    assert json.loads((run / "task.json").read_text())["pooling"] == "xlnet"
    tuned = load_file(run / "model.safetensors")
    assert {"dense.weight", "classifier.weight", "encoder.mask_emb"} <= set(tuned)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(xlnet_sst2), "--data", str(root / "glue")]) == 0
    scores = capsys.readouterr().out.strip().splitlines()[-1]
    assert scores == "sst2 dev (16 examples): accuracy 1.0000"
    # the features are XLNet's: text, <sep>, <cls> last (segment 2)
    ids, types = tokenizer.build_inputs(tokenizer.encode("a good film"))
    assert ids[-2:] == [tokenizer.sep_id, tokenizer.cls_id] and types[-1] == 2


def padded(tokenizer, texts, left: bool):
    """(ids, mask, types) of XLNet's template (the models' argument order), padded on the left
    or the right."""
    rows = [tokenizer.encode_pair(*t) for t in texts]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_id)
    types, mask = torch.full_like(ids, 4), torch.zeros_like(ids)  # 4: XLNet's padding segment
    for n, (row, segment) in enumerate(rows):
        where = slice(T - len(row), T) if left else slice(0, len(row))
        ids[n, where], types[n, where], mask[n, where] = torch.tensor(row), torch.tensor(segment), 1
    return ids, mask, types


TEXTS = [("the plot was so bad and the ending is really bad", None), ("a good film", "so good")]


def test_convert_classifier_both_ways_logits_equal_transformers(
    xlnet_workspace, xlnet_sst2, tmp_path
):
    """convert --to hf gives XLNetForSequenceClassification: its logits on the left-padded batch
    (XLNet's tokenizer) equal ours on the right-padded one (collate_features) <= 1e-5; back to
    muppets, the same tensors."""
    import transformers

    root, tokenizer = xlnet_workspace
    run, hf, back = xlnet_sst2 / "seed-1", tmp_path / "hf", tmp_path / "back"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", "--input", str(run), "--out", str(hf), "--to", "hf"]) == 0
        assert main(["convert", "--input", str(hf), "--out", str(back), "--to", "muppets"]) == 0
    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["XLNetForSequenceClassification"]
    theirs = transformers.XLNetForSequenceClassification.from_pretrained(hf).eval()
    model, _, _ = load_finetuned(run)
    with torch.no_grad():
        want = theirs(*padded(tokenizer, TEXTS, left=True)[:1], **_named(tokenizer, True)).logits
        got = model(*padded(tokenizer, TEXTS, left=False))
    assert (got - want).abs().max() < 1e-5
    a, b = load_file(run / "model.safetensors"), load_file(back / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # transformers' own tokenizer pads on the left (convert says so), so its pipeline agrees
    hf_tokenizer = transformers.XLNetTokenizerFast.from_pretrained(hf)
    assert hf_tokenizer.padding_side == "left"
    texts = [text for text, _ in TEXTS]
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        want = theirs(**batch).logits
        got = model(*padded(tokenizer, [(text, None) for text in texts], left=False))
    assert (got - want).abs().max() < 1e-5


def _named(tokenizer, left):
    _, mask, types = padded(tokenizer, TEXTS, left)
    return {"token_type_ids": types, "attention_mask": mask}


@pytest.mark.parametrize("head", ["span_qa", "tagging"])
def test_qa_and_tagging_heads_equal_transformers(xlnet_workspace, tmp_path, head):
    """XLNetForQuestionAnsweringSimple / XLNetForTokenClassification from save_hf_task: the same
    per-token logits at the real tokens (theirs left-padded) <= 1e-5, and read back."""
    import transformers

    from muppets.tasks.hf_tasks import load_hf_task, save_hf_task
    from muppets.tasks.registry import build_head, task_spec
    from muppets.tasks.setup import TaskSetup

    _, tokenizer = xlnet_workspace
    config = preset_config("xlnet-tiny", vocab_size=tokenizer.vocab_size, pad_token_id=5)
    task = "squad" if head == "span_qa" else "conll2003"
    labels = [] if head == "span_qa" else list(task_spec(task).labels)
    torch.manual_seed(0)
    ours = build_head(task_spec(task), XLNetModel(config), len(labels)).eval()
    setup = TaskSetup(task=task, head=head, labels=labels, max_seq_length=128)
    save_hf_task(ours, config, setup, tmp_path)
    kind = "XLNetForQuestionAnsweringSimple" if head == "span_qa" else "XLNetForTokenClassification"
    theirs = getattr(transformers, kind).from_pretrained(tmp_path).eval()
    left, right = padded(tokenizer, TEXTS, True), padded(tokenizer, TEXTS, False)
    with torch.no_grad():
        out = theirs(left[0], attention_mask=left[1], token_type_ids=left[2])
        want = (
            torch.stack([out.start_logits, out.end_logits], -1) if head == "span_qa" else out.logits
        )
        got = ours(*right)
    got = torch.stack(tuple(got), -1) if head == "span_qa" else got  # (B, T, 2)
    lengths = right[1].sum(1)
    for n, length in enumerate(lengths.tolist()):
        assert (got[n, :length] - want[n, -length:]).abs().max() < 1e-5
    loaded = load_hf_task(tmp_path)
    assert loaded.setup.head == head
    sd = loaded.model.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in ours.state_dict().items())


def test_squad_windows_point_no_answer_at_the_last_cls_and_predict(xlnet_workspace, tmp_path):
    """XLNet's QA: question <sep> window <sep> <cls>; a window without the answer (and the
    unanswerable question) is labelled at its <cls>, the LAST token, where v2.0's null score is
    read; fine-tune, evaluate and predict run over it."""
    from muppets.data.readers.squad import read_squad
    from muppets.data.task_features import qa_features

    root, tokenizer = xlnet_workspace
    squad = root / "squad.json"
    features = qa_features(read_squad(squad)[0], tokenizer, max_seq_length=24, doc_stride=6)
    for f in features:
        assert f.input_ids[-1] == tokenizer.cls_id and f.null_index == len(f) - 1
        assert f.input_ids[f.context_start - 1] == tokenizer.sep_id  # after the question
    empty = [f for f in features if f.targets["start_positions"] == len(f) - 1]
    assert empty and all(f.targets["end_positions"] == len(f) - 1 for f in empty)
    out = tmp_path / "qa"
    args = ["--task", "squad", "--train-file", str(squad), "--dev-file", str(squad)]
    args += ["--model", "xlnet-tiny", "--tokenizer", str(root / "tok"), "--out", str(out)]
    args += ["--epochs", "1", "--max-seq-length", "24", "--doc-stride", "6", "--batch-size", "8"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", *args]) == 0
    dev = json.loads((out / "seed-1" / "metrics.json").read_text())["dev"]["dev"]
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"} <= set(dev) and dev["total"] == 7
    target = tmp_path / "answers.json"
    predict = ["predict", "--model", str(out / "seed-1"), "--input", str(squad)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*predict, "--out", str(target)]) == 0
    assert len(json.loads(target.read_text())) == 7


def test_tagging_features_end_with_sep_cls_and_conll_fine_tunes(xlnet_workspace, tmp_path):
    from muppets.data.readers.conll import read_conll
    from muppets.data.task_features import tagging_features

    root, tokenizer = xlnet_workspace
    sentences = read_conll(root / "conll" / "train.txt")
    features = tagging_features(sentences, tokenizer, 16, ["O", "B-PER", "B-LOC"] + ["I-PER"])
    for f in features:
        assert f.input_ids[-2:].tolist() == [tokenizer.sep_id, tokenizer.cls_id]
        assert f.token_type_ids[-1] == 2 and f.word_ids[-2:].tolist() == [-1, -1]
        assert f.word_ids[0] >= 0 and f.targets["labels"][0] >= 0  # a word first, no <cls>
    out = tmp_path / "ner"
    args = ["--task", "conll2003", "--data", str(root / "conll"), "--model", "xlnet-tiny"]
    args += ["--tokenizer", str(root / "tok"), "--out", str(out), "--epochs", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", *args]) == 0
    dev = json.loads((out / "seed-1" / "metrics.json").read_text())["dev"]["dev"]
    assert {"precision", "recall", "f1"} <= set(dev)


def test_extract_equals_transformers_hidden_states_left_padded(xlnet_workspace, tmp_path):
    """`muppets extract` right-pads its batch; XLNet's relative positions make the real tokens'
    states the same as transformers' XLNetModel on the LEFT-padded batch (every layer)."""
    import numpy as np
    import transformers

    root, tokenizer = xlnet_workspace
    config = preset_config("xlnet-tiny", vocab_size=tokenizer.vocab_size, pad_token_id=5)
    torch.manual_seed(0)
    model = XLNetLMHeadModel(config)
    checkpoint = tmp_path / "ckpt"
    save_pretrained(checkpoint, model, config.to_dict())
    tokenizer.save(checkpoint)
    texts = ["a good film", "the plot was so bad and the ending is really quite bad"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "features.npz"
    args = ["extract", "--model", str(checkpoint), "--input", str(tmp_path / "in.txt")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(out)]) == 0
    ours = np.load(out)
    theirs = transformers.XLNetModel(transformers.XLNetConfig(**config_to_hf(config, False)))
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("mlm_head.")}
    theirs.load_state_dict(state_dict_to_hf(encoder, config))
    theirs.eval()
    rows = [tokenizer.encode_pair(t)[0] for t in texts]
    T = max(len(r) for r in rows)
    ids = torch.full((2, T), tokenizer.pad_id)
    mask = torch.zeros(2, T)
    for n, r in enumerate(rows):
        ids[n, T - len(r) :], mask[n, T - len(r) :] = torch.tensor(r), 1.0
    with torch.no_grad():
        states = theirs(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(states) == config.n_layer + 1
    for n, r in enumerate(rows):
        got = ours[f"line-{n + 1}"]  # (L + 1, T_n, H)
        want = torch.stack([s[n, T - len(r) :] for s in states]).numpy()
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_export_refuses_xlnet_in_one_line(xlnet_sst2, tmp_path, cli_error):
    pytest.importorskip("onnxruntime")
    args = ["export", "--model", str(xlnet_sst2 / "seed-1"), "--out", str(tmp_path / "onnx")]
    assert "XLNet has no ONNX export here" in cli_error(args)
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_finetune_starts_from_a_pretrain_xlnet_run(tiny_shards, xlnet_workspace, tmp_path):
    """`finetune --model <pretrain-xlnet run>`: the encoder is the run's (mask_emb, unused when
    fine-tuning, comes through unchanged) and the run's own tokenizer featurizes the task."""
    pretrained = run(tiny_shards, tmp_path / "pre", max_steps=1)
    root, _ = xlnet_workspace
    out = tmp_path / "sst2"
    args = ["--task", "sst2", "--data", str(root / "glue"), "--model", str(pretrained)]
    args += ["--out", str(out), "--epochs", "1", "--batch-size", "8"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", *args]) == 0
    before, after = weights(pretrained, 1), load_file(out / "seed-1" / "model.safetensors")
    assert torch.equal(before["encoder.mask_emb"], after["encoder.mask_emb"])
    assert not torch.equal(
        before["encoder.word_embeddings.weight"], after["encoder.word_embeddings.weight"]
    )


def test_serve_classifies_as_predict_writes(xlnet_workspace, xlnet_sst2, tmp_path):
    import csv

    from tests.serve_helpers import call, running, served_app

    root, _ = xlnet_workspace
    dev, out = root / "glue" / "SST-2" / "dev.tsv", tmp_path / "predictions.txt"
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            main(["predict", "--model", str(xlnet_sst2), "--input", str(dev), "--out", str(out)])
            == 0
        )
    written = [line.split("\t")[1] for line in out.read_text().splitlines()[1:]]
    with dev.open() as f:
        sentences = [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]
    with running(served_app(xlnet_sst2 / "seed-1")) as port:
        info = call(port, "GET", "/info")[2]
        body = call(port, "POST", "/classify", {"inputs": sentences})[2]
    assert info["model_type"] == "xlnet" and info["routes"] == ["classify", "embed"]
    assert [r["label"] for r in body["results"]] == written and len(written) == 16


def test_right_padding_without_a_mask_is_refused_left_padding_is_read(xlnet_workspace, xlnet_sst2):
    """Where the caller pads (the Python API, no attention_mask), XLNet's last position must be
    <cls>: a right-padded batch is an InputError naming the fix; a left-padded one runs (its
    full row reads as with the mask)."""
    from muppets.errors import InputError

    _, tokenizer = xlnet_workspace
    model, _, _ = load_finetuned(xlnet_sst2)
    ids, mask, types = padded(tokenizer, TEXTS, left=False)
    with pytest.raises(InputError, match="pad on the left or pass attention_mask"):
        model(ids, None, types)
    ids, mask, types = padded(tokenizer, TEXTS, left=True)
    with torch.no_grad():
        assert torch.allclose(model(ids, None, types)[0], model(ids, mask, types)[0], atol=1e-6)
