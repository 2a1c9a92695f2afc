"""`muppets serve` answers what `muppets predict` writes (labels, tags, spans), batched or one at a
time; fill-mask is `predict fill-mask`'s; /embed pools the encoder's own states."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from muppets.cli.main import main
from muppets.recipes.fill_mask import fill_mask
from muppets.training.pretrained import load_pretrained
from tests.serve_helpers import (
    call,
    running,
    save_classifier,
    save_pretrained_bert,
    save_qa,
    save_tagger,
    served_app,
)

WORDS = "the cat sat on mat . a dog ran in park sun is hot".split()
CONTEXT = "the cat sat on the mat . a dog ran in the park . the sun is hot ."
QUESTIONS = ["who sat ?", "what ran ?", "where is the dog ?", "what is hot ?", "the cat ?"]
QUESTIONS += ["on the mat ?", "a park ?", "is the sun hot ?", "what sat on the mat ?", "the dog ?"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tiny_tokenizer, tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("serve-models")
    return {
        "classify": save_classifier(root / "classify", tiny_tokenizer, texts(24)),
        "tag": save_tagger(root / "tag", tiny_tokenizer),
        "qa": save_qa(root / "qa", tiny_tokenizer, QUESTIONS, CONTEXT),
        "bert": save_pretrained_bert(root / "bert", tiny_tokenizer),
    }


def predict_file(model, input_path, out_path, capsys):
    code = main(
        ["predict", "--model", str(model), "--input", str(input_path), "--out", str(out_path)]
    )
    assert code == 0, capsys.readouterr().err
    return out_path.read_text(encoding="utf-8")


def concurrently(port, path, bodies):
    """Every body sent at once from its own client (the batcher groups them)."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: call(port, "POST", path, body), bodies))


def test_classify_equals_predict_batched_and_alone(models, tmp_path, capsys):
    sentences = texts(24)
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "".join(f"{s}\t0\n" for s in sentences))
    written = predict_file(models["classify"], dev, tmp_path / "pred.tsv", capsys)
    expected = [line.split("\t")[1] for line in written.splitlines()[1:]]
    assert set(expected) == {"0", "1"}  # both labels occur: a swap would show
    with running(served_app(models["classify"])) as port:
        status, _, whole = call(port, "POST", "/classify", {"inputs": sentences})
        alone = concurrently(port, "/classify", [{"inputs": [s]} for s in sentences])
    assert status == 200
    assert [r["label"] for r in whole["results"]] == expected
    assert [body["results"][0]["label"] for _, _, body in alone] == expected
    for result in whole["results"]:
        probabilities = result["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert max(probabilities, key=probabilities.get) == result["label"]
    # max_seq_length 12: [CLS] + 10 words + [SEP] fits, more is cut (predict cuts it the same)
    assert [r["truncated"] for r in whole["results"]] == [len(s.split()) > 10 for s in sentences]


def test_classify_pairs_and_truncate_false(models):
    with running(served_app(models["classify"])) as port:
        status, _, body = call(
            port, "POST", "/classify", {"inputs": ["the cat"], "text_pairs": ["a dog"]}
        )
        long = " ".join(["the cat"] * 10)
        refused = call(port, "POST", "/classify?truncate=false", {"inputs": ["the sun", long]})
    assert status == 200 and body["results"][0]["label"] in ("0", "1")
    assert refused[0] == 413
    assert refused[2]["error"]["field"] == "inputs.1"
    assert refused[2]["error"]["message"].startswith("22 tokens, more than the model's 12")


def test_tag_equals_predict_with_entity_offsets(models, tmp_path, capsys):
    sentences = texts(12, seed=1)
    conll = tmp_path / "test.txt"
    conll.write_text("".join("".join(f"{w} O\n" for w in s.split()) + "\n" for s in sentences))
    written = predict_file(models["tag"], conll, tmp_path / "pred.txt", capsys)
    expected = [[line.split()[2] for line in block.splitlines()] for block in written.split("\n\n")]
    expected = [tags for tags in expected if tags]
    spaced = ["  " + s.replace(" ", "   ") + " " for s in sentences]  # offsets over any spacing
    with running(served_app(models["tag"])) as port:
        status, _, body = call(port, "POST", "/tag", {"inputs": spaced})
    assert status == 200
    assert [r["tags"] for r in body["results"]] == expected
    assert len({t for tags in expected for t in tags}) > 2
    for text, result in zip(spaced, body["results"], strict=True):
        for entity in result["entities"]:
            chosen = text[entity["start"] : entity["end"]]
            assert chosen == chosen.strip() and chosen.split()[0] in result["words"]


def test_qa_equals_predict_with_character_offsets(models, tmp_path, capsys):
    qas = [
        {"id": f"q{n}", "question": q, "answers": [], "is_impossible": True}
        for n, q in enumerate(QUESTIONS)
    ]
    document = {"version": "v2.0", "data": [{"paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(document))
    expected = json.loads(predict_file(models["qa"], dev, tmp_path / "pred.json", capsys))
    inputs = [{"question": q, "context": CONTEXT} for q in QUESTIONS]
    with running(served_app(models["qa"])) as port:
        status, _, body = call(port, "POST", "/qa", {"inputs": inputs})
        threshold = call(port, "GET", "/info")[2]["null_threshold"]
    assert status == 200
    answers = [r["answer"] for r in body["results"]]
    assert answers == [expected[f"q{n}"] for n in range(len(QUESTIONS))]
    assert "" in answers and any(answers)  # the v2.0 threshold chose both ways
    for result in body["results"]:
        if result["answer"]:
            assert CONTEXT[result["start"] : result["end"]] == result["answer"]
        else:
            assert result["start"] is None and result["null_odds"] > threshold


def test_fill_mask_and_targets_equal_the_recipe(models):
    model, config, tokenizer = load_pretrained(models["bert"])
    text = "the [MASK] sat on the [MASK] ."
    expected = fill_mask(model, tokenizer, text, 3, config.max_sequence_length)
    with running(served_app(models["bert"])) as port:
        status, _, body = call(port, "POST", "/fill-mask", {"inputs": [text], "top_k": 3})
        _, _, picked = call(
            port, "POST", "/fill-mask", {"inputs": [text], "targets": ["cat", "dog"]}
        )
    assert status == 200
    masks = body["results"][0]["masks"]
    assert [[(o["token"], o["probability"]) for o in m] for m in masks] == [
        [(t, pytest.approx(p, abs=1e-6)) for t, p in options] for options in expected
    ]
    everything = fill_mask(model, tokenizer, text, tokenizer.vocab_size)
    for chosen, options in zip(picked["results"][0]["masks"], everything, strict=True):
        wanted = [(t, p) for t, p in options if t in ("cat", "dog")]
        assert [(o["token"], o["probability"]) for o in chosen] == [
            (t, pytest.approx(p, abs=1e-6)) for t, p in wanted
        ]


def test_embed_pools_the_encoder_states(models):
    model, _, tokenizer = load_pretrained(models["bert"])
    text = "a dog ran in the park ."
    ids = torch.tensor([tokenizer.encode_pair(text)[0]])
    with torch.no_grad():
        layers = model.encoder.forward_all_layers(ids, torch.ones_like(ids), torch.zeros_like(ids))
    with running(served_app(models["bert"])) as port:
        asks = [
            {"inputs": [text], "pooling": "cls"},
            {"inputs": [text], "pooling": "mean", "layer": 1},
            {"inputs": [text], "layer": "mix", "normalize": True},
            {"inputs": [text, "the sun"], "pooling": "cls"},  # padded beside a shorter text
        ]
        bodies = [call(port, "POST", "/embed", ask)[2]["results"] for ask in asks]
    mix = torch.stack(layers).mean(0)[0].mean(0)
    expected = [layers[-1][0, 0], layers[1][0].mean(0), mix / mix.norm(), layers[-1][0, 0]]
    for results, vector in zip(bodies, expected, strict=True):
        assert torch.allclose(torch.tensor(results[0]["embedding"]), vector, atol=1e-5)
