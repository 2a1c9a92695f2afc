"""transformers' task models as fine-tuned models: Bert/Roberta/Albert/ElectraFor
SequenceClassification (labels and regression), TokenClassification and QuestionAnswering
(ELECTRA's sequence classifier: our pooling="electra"), built by transformers at a
tiny random size and saved with save_pretrained beside a WordPiece tokenizer. They convert
(`--to muppets`: task.json from config.json's labels) with transformers' logits, convert back
(`--to hf`) to the same class, labels and logits, and `evaluate` / `predict` use them directly
with the predictions transformers' own model gives."""

import json

import pytest
import torch
from conftest import small_hf_sizes
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.models.registry import build_encoder, preset_config
from muppets.tasks.classification import SequenceClassifier
from muppets.tasks.setup import TaskSetup, load_task, save_task
from muppets.training.checkpoint import save_pretrained
from muppets.training.pretrained import load_finetuned, load_pretrained

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
# name: (transformers class suffix, config extras, the task.json expected)
HEADS = {
    "classification": (
        "ForSequenceClassification",
        {"id2label": {0: "neg", 1: "neutral", 2: "pos"}},
        {"task": "tabular", "head": "classification", "labels": ["neg", "neutral", "pos"]},
    ),
    "regression": (
        "ForSequenceClassification",
        {"num_labels": 1},
        {"task": "tabular-regression", "head": "regression", "labels": []},
    ),
    "tagging": (
        "ForTokenClassification",
        {"id2label": dict(enumerate(TAGS))},
        {"task": "conll", "head": "tagging", "labels": TAGS},
    ),
    "span_qa": ("ForQuestionAnswering", {}, {"task": "squad", "head": "span_qa", "labels": []}),
}
FAMILIES = {"bert": "Bert", "roberta": "Roberta", "electra": "Electra", "albert": "Albert"}
CASES = [(family, head) for family in ("bert", "roberta") for head in HEADS]
CASES += [("electra", head) for head in HEADS]  # E 16 -> H 32; its own classification head
CASES += [("albert", head) for head in HEADS]  # E 16 -> H 32, one layer shared twice


def save_hf(directory, model_type, class_suffix, tokenizer, seed=0, **extra):
    """transformers' task model, random (its own init), saved with the tokenizer; eval mode."""
    sizes = small_hf_sizes(tokenizer, **extra)
    if model_type == "roberta":
        config = transformers.RobertaConfig(max_position_embeddings=66, type_vocab_size=1, **sizes)
    elif model_type == "electra":  # embeddings of width 16 projected up to 32
        config = transformers.ElectraConfig(max_position_embeddings=64, embedding_size=16, **sizes)
    elif model_type == "albert":
        config = transformers.AlbertConfig(max_position_embeddings=64, embedding_size=16, **sizes)
    else:
        config = transformers.BertConfig(max_position_embeddings=64, **sizes)
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[model_type] + class_suffix)(config).eval()
    model.save_pretrained(directory)
    tokenizer.save(directory)
    return model


def hf_logits(model, ids, mask, types):
    """The logits our head gives: (B, K), (B, T, K), or (start, end) each (B, T)."""
    types = types if model.config.type_vocab_size > 1 else torch.zeros_like(types)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return (out.start_logits, out.end_logits) if hasattr(out, "start_logits") else out.logits


def our_logits(model, ids, mask, types, model_type):
    types = types if model_type != "roberta" else torch.zeros_like(types)
    with torch.no_grad():
        out = model(ids, mask, types)
    return (out.start, out.end) if hasattr(out, "start") else out


def batch(tokenizer):
    texts = [("the cat sat on the mat .", "the sun is hot ."), ("a dog ran", None)]
    rows = [tokenizer.encode_pair(a, b) for a, b in texts]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_id)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for n, (row, segment) in enumerate(rows):
        ids[n, : len(row)] = torch.tensor(row)
        types[n, : len(row)] = torch.tensor(segment)
        mask[n, : len(row)] = 1
    return ids, mask, types


def same_at_real(a, b, mask):
    """Equal logits at real positions (padding is masked differently: ours -inf for QA)."""
    if isinstance(a, tuple):
        return all(same_at_real(x, y, mask) for x, y in zip(a, b, strict=True))
    if a.dim() == 1 or a.shape[:2] != mask.shape:  # (B, K): one row per example
        return a.shape == b.shape and torch.allclose(a, b, atol=ATOL)
    real = mask.bool()
    return a.shape == b.shape and torch.allclose(a[real], b[real], atol=ATOL)


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # without the precision line that commands running a model print first (test_precision_runs)
    return [line for line in captured.out.splitlines() if not line.startswith("precision: ")]


@pytest.mark.parametrize("model_type, head", CASES)
def test_task_models_convert_both_ways_with_their_labels_and_logits(
    tmp_path, tiny_tokenizer, capsys, model_type, head, one_thread
):
    suffix, extra, task = HEADS[head]
    hf = save_hf(tmp_path / "hf", model_type, suffix, tiny_tokenizer, **extra)
    convert = ["convert", "--input", str(tmp_path / "hf"), "--to"]
    lines = run([*convert, "muppets", "--out", str(tmp_path / "ours")], capsys)
    labels = f": labels {', '.join(task['labels'])}" if task["labels"] else ""
    assert lines[-1].endswith(f"fine-tuned for {task['task']} ({task['head']}{labels}))")
    setup = load_task(tmp_path / "ours")
    assert {k: getattr(setup, k) for k in task} == task
    # the task's 128 (SQuAD: 384) cut to the model's positions (RoBERTa: 66 - pad offset 1)
    assert (
        setup.max_seq_length == {"bert": 64, "roberta": 65, "electra": 64, "albert": 64}[model_type]
    )
    # the SQuAD version is not in config.json: told by each file (None)
    own_head = model_type == "electra" and head in ("classification", "regression")
    pooling = "electra" if own_head else "pooler"
    assert (setup.pooling, setup.squad_v2) == (pooling, None if head == "span_qa" else False)

    ids, mask, types = batch(tiny_tokenizer)
    want = hf_logits(hf, ids, mask, types)
    for directory in (tmp_path / "hf", tmp_path / "ours"):  # as it comes, and converted
        model, loaded, _ = load_finetuned(directory)
        assert loaded == setup
        assert same_at_real(our_logits(model, ids, mask, types, model_type), want, mask)

    run(
        [*convert[:2], str(tmp_path / "ours"), "--to", "hf", "--out", str(tmp_path / "back")],
        capsys,
    )
    values = json.loads((tmp_path / "back" / "config.json").read_text())
    assert values["architectures"] == [type(hf).__name__]
    back = type(hf).from_pretrained(tmp_path / "back").eval()
    assert (back.config.num_labels, back.config.id2label) == (
        hf.config.num_labels,
        hf.config.id2label,
    )
    assert back.config.problem_type == ("regression" if head == "regression" else None)
    assert set(load_file(tmp_path / "back" / "model.safetensors")) == set(
        load_file(tmp_path / "hf" / "model.safetensors")
    )
    assert same_at_real(hf_logits(back, ids, mask, types), want, mask)


def first_subtoken_tags(model, feature, labels):
    """transformers' tag for each word: the argmax at its first sub-token."""
    ids = torch.tensor(feature.input_ids, dtype=torch.long)[None]
    types = torch.tensor(feature.token_type_ids, dtype=torch.long)[None]
    logits = hf_logits(model, ids, torch.ones_like(ids), types)[0]  # (T, K)
    tags = {}
    for position, word in enumerate(feature.word_ids.tolist()):
        if word >= 0 and word not in tags:
            tags[word] = labels[int(logits[position].argmax())]
    return [tags[w] for w in sorted(tags)]


def sst2_predictions_are_transformers(root, tmp_path, tokenizer, model_type, capsys):
    """predict and evaluate on SST-2's dev file with transformers' sequence classifier as it
    comes, labels from its config.json: transformers' own predictions and their accuracy."""
    # weights of std 0.5, not 0.02, so that a random model's predictions differ from text to text
    spread = {"initializer_range": 0.5}
    hf = save_hf(tmp_path / "sst2", model_type, "ForSequenceClassification", tokenizer, 3, **spread)
    dev = root / "glue" / "SST-2" / "dev.tsv"
    out = tmp_path / "sst2.tsv"
    model = ["--model", str(tmp_path / "sst2"), "--task", "sst2"]
    run(["predict", *model, "--input", str(dev), "--out", str(out)], capsys)
    _, setup, _ = load_finetuned(tmp_path / "sst2")
    examples = setup.read(dev, "dev")
    predicted = [line.split("\t")[1] for line in out.read_text().splitlines()[1:]]
    expected = []
    for feature in setup.featurize(examples, tokenizer):
        ids = torch.tensor(feature.input_ids, dtype=torch.long)[None]
        types = torch.tensor(feature.token_type_ids, dtype=torch.long)[None]
        expected.append(str(int(hf_logits(hf, ids, torch.ones_like(ids), types).argmax())))
    assert predicted == expected and len(set(expected)) == 2
    gold = [str(e.label) for e in examples]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    lines = run(["evaluate", *model, "--data", str(root / "glue")], capsys)
    assert lines == [f"sst2 dev ({len(gold)} examples): accuracy {accuracy:.4f}"]


@pytest.mark.parametrize("model_type", ["bert", "electra"])
def test_evaluate_and_predict_use_transformers_sequence_classifiers_directly(
    finetune_workspace, tmp_path, capsys, model_type, one_thread
):
    """SST-2 with transformers' placeholder labels (LABEL_0, LABEL_1 = GLUE's "0", "1")."""
    root, _, tokenizer, _ = finetune_workspace
    sst2_predictions_are_transformers(root, tmp_path, tokenizer, model_type, capsys)


def test_predict_uses_transformers_token_classifiers_directly(
    finetune_workspace, tmp_path, capsys, one_thread
):
    root, _, tokenizer, _ = finetune_workspace
    spread = {"initializer_range": 0.5}
    # CoNLL tags named in id2label; predict as it comes == predict converted == transformers
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    names = {"id2label": dict(enumerate(tags)), **spread}
    hf = save_hf(tmp_path / "ner", "bert", "ForTokenClassification", tokenizer, seed=4, **names)
    convert = ["convert", "--input", str(tmp_path / "ner"), "--to", "muppets"]
    run([*convert, "--out", str(tmp_path / "ner-ours")], capsys)
    conll = root / "conll" / "valid.txt"
    written = []
    for name in ("ner", "ner-ours"):
        target = tmp_path / f"{name}.txt"
        inputs = ["--input", str(conll), "--out", str(target)]
        run(["predict", "--model", str(tmp_path / name), *inputs], capsys)
        written.append(target.read_text())
    assert written[0] == written[1]
    _, setup, _ = load_finetuned(tmp_path / "ner")
    sentences = setup.read(conll, "dev")
    features = setup.featurize(sentences, tokenizer)
    expected = [first_subtoken_tags(hf, f, tags) for f in features]
    predicted = [
        [line.split()[2] for line in block.splitlines()]
        for block in written[0].strip("\n").split("\n\n")
    ]
    assert predicted == expected and len({tag for row in expected for tag in row}) > 1


REFUSED = {
    ("bert", "cls"): "sequence classifiers read the pooled first token (pooling='pooler')",
    ("electra", "pooler"): (
        "ElectraForSequenceClassification reads dense + GELU on the first token (pooling='electra')"
    ),
}


@pytest.mark.parametrize(
    "preset, pooling",
    [("bert-tiny", "pooler"), ("bert-tiny", "cls"), ("electra-tiny", "electra")]
    + [("electra-tiny", "pooler")],
)
def test_our_fine_tuned_classifier_goes_to_transformers_unless_it_pools_otherwise(
    tmp_path, tiny_tokenizer, capsys, cli_error, preset, pooling, one_thread
):
    sizes = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48}
    if preset == "electra-tiny":
        sizes["embedding_size"] = 16
    config = preset_config(preset, vocab_size=tiny_tokenizer.vocab_size, **sizes)
    torch.manual_seed(5)
    model = SequenceClassifier(build_encoder(config), 2, pooling=pooling).eval()
    ours = tmp_path / "ours"
    save_pretrained(ours, model, config.to_dict())
    tiny_tokenizer.save(ours)
    labels = ["entailment", "not_entailment"]
    save_task(ours, TaskSetup("rte", "classification", labels, 32, pooling=pooling))
    argv = ["convert", "--input", str(ours), "--to", "hf", "--out", str(tmp_path / "hf")]
    if (config.model_type, pooling) in REFUSED:
        assert cli_error(argv) == (
            f"muppets: error: pooling={pooling!r}: transformers' "
            f"{REFUSED[config.model_type, pooling]}, so this model has no Hugging Face equivalent"
        )
        assert not (tmp_path / "hf").exists()
        return
    run(argv, capsys)
    family = FAMILIES[config.model_type]
    hf_class = getattr(transformers, family + "ForSequenceClassification")
    hf = hf_class.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.id2label == {0: "entailment", 1: "not_entailment"}
    ids, mask, types = batch(tiny_tokenizer)
    want = our_logits(model, ids, mask, types, config.model_type)
    assert same_at_real(hf_logits(hf, ids, mask, types), want, mask)


def test_a_task_model_is_also_an_encoder_without_an_mlm_head(
    tmp_path, tiny_tokenizer, capsys, cli_error, one_thread
):
    """finetune and extract start from its encoder; fill-mask says what is missing."""
    hf = save_hf(tmp_path / "hf", "roberta", "ForTokenClassification", tiny_tokenizer)
    capsys.readouterr()  # transformers' progress bar
    model, _, _ = load_pretrained(tmp_path / "hf")
    assert (model.mlm_head, model.pair_head) == (None, None)
    ids, mask, types = batch(tiny_tokenizer)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        got = model.encoder(ids, mask, torch.zeros_like(types))
    assert same_at_real(got, want, mask)
    line = cli_error(["predict", "fill-mask", "a [MASK] .", "--model", str(tmp_path / "hf")])
    assert line == f"muppets: error: {tmp_path / 'hf'}: no MLM head: fill-mask is not available"


def test_a_transformers_qa_model_reads_the_squad_version_from_each_file(
    finetune_workspace, tmp_path, capsys, one_thread
):
    """config.json does not say v1.1 or v2.0: a file with an unanswerable question is scored
    (and predicted) as by a v2.0 model, any other as by a v1.1 model."""
    root, _, tokenizer, _ = finetune_workspace
    save_hf(tmp_path / "hf", "bert", "ForQuestionAnswering", tokenizer, 6)
    convert = ["convert", "--input", str(tmp_path / "hf"), "--to", "muppets", "--out"]
    lines = {}
    for version, name in ((False, "squad-v1.json"), (True, "squad.json")):
        known = tmp_path / f"v2-{version}"
        run([*convert, str(known)], capsys)
        task = known / "task.json"
        task.write_text(json.dumps({**json.loads(task.read_text()), "squad_v2": version}))
        for model in (tmp_path / "hf", known):
            argv = ["evaluate", "--model", str(model), "--file", str(root / name)]
            lines.setdefault(version, []).append(run(argv, capsys))
    assert lines[False][0] == lines[False][1] and "HasAns" not in lines[False][0][0]
    assert lines[True][0] == lines[True][1] and "NoAns_total 1.0000" in lines[True][0][0]
