"""evaluate/predict score what they write: SQuAD v2.0 at any --null-threshold, the official
best threshold beside the chosen one, every question scored, test files scored when present."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from muppets.cli.main import main
from muppets.errors import InputError
from muppets.models.registry import build_encoder, preset_config
from muppets.tasks.metrics import normalize_answer, squad_f1, squad_v2_scores
from muppets.tasks.prediction import evaluate_examples, predict
from muppets.tasks.registry import build_head, task_spec
from muppets.tasks.setup import TaskSetup, save_task
from muppets.tasks.span_qa import SpanLogits
from muppets.training.checkpoint import save_pretrained

CONTEXT = "the cat sat on the mat . a dog ran in the park . the sun is hot ."
QUESTIONS = "who sat ?|what ran ?|where is the dog ?|what is hot ?|the cat ?|on the mat ?|a park ?"
QUESTIONS = QUESTIONS.split("|") + ["is the sun hot ?", "what sat on the mat ?", "the dog ?"]
ANSWERS = ["the cat", "a dog", "the park", "the sun", "cat"]


def squad_v2(path, impossible=(5, 6, 7, 8, 9)):
    qas = []
    for n, question in enumerate(QUESTIONS):
        answer = ANSWERS[n % len(ANSWERS)]
        gold = {"text": answer, "answer_start": CONTEXT.index(answer)}
        qas.append(
            {
                "id": f"q{n}",
                "question": question,
                "is_impossible": n in impossible,
                "answers": [] if n in impossible else [gold],
            }
        )
    paragraph = {"context": CONTEXT, "qas": qas}
    document = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [paragraph]}]}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def qa_model(tiny_tokenizer, tmp_path_factory):
    """A tiny random BERT with a span head, its logits scaled up so that the null odds spread
    over about 20 (a trained model's range), saved as a fine-tuned SQuAD v2.0 directory; and
    its null odds, sorted."""
    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vocabulary = {"vocab_size": tiny_tokenizer.vocab_size, "pad_token_id": tiny_tokenizer.pad_id}
    config = preset_config("bert-tiny", **vocabulary, **sizes)
    model = build_head(task_spec("squad"), build_encoder(config), 0).eval()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(300.0)
    setup = TaskSetup("squad", "span_qa", [], 24, squad_v2=True, doc_stride=6)
    directory = tmp_path_factory.mktemp("squad-model")
    save_pretrained(directory, model, config.to_dict())
    tiny_tokenizer.save(directory)
    save_task(directory, setup)
    data = squad_v2(directory.parent / "dev-v2.0.json")
    examples = setup.read(data, "dev")
    _, notes = predict(model, setup, examples, setup.featurize(examples, tiny_tokenizer), 0)
    odds = sorted(notes["null_odds"].values())
    return model, setup, tiny_tokenizer, directory, data, odds


class Centred(nn.Module):
    """The model with `shift` added to the start and end logits of [CLS]: null odds + 2 shift."""

    def __init__(self, model: nn.Module, shift: float):
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        bump = torch.zeros_like(out.start)
        bump[:, 0] = self.shift  # (B, T): [CLS] only
        return SpanLogits(out.start + bump, out.end + bump)


def brute_force_best_f1(gold, spans, odds):
    """max over thresholds t of F1 when answering "" where the null odds exceed t."""

    def f1(qid, text):
        if not gold[qid]:
            return float(not normalize_answer(text))
        return max(squad_f1(text, a, version="2.0") for a in gold[qid])

    candidates = [-math.inf, *sorted(odds.values())]
    totals = [sum(f1(q, spans[q] if odds[q] <= t else "") for q in gold) for t in candidates]
    return 100 * max(totals) / len(gold)


@pytest.mark.parametrize("threshold", [0.0, 3.0, 8.0, 30.0])
def test_squad_v2_score_is_the_score_of_the_written_predictions(qa_model, threshold):
    model, setup, tokenizer, _, data, raw_odds = qa_model
    # null odds from 2 up (two clusters, about 2-3.5 and 16-24): above evaluate-v2.0.py's
    # default na_prob_thresh of 1.0, which the score of the predictions must not apply again
    model = Centred(model, -(raw_odds[0] - 2) / 2)
    setup = TaskSetup(**{**setup.__dict__, "null_threshold": threshold})
    examples = setup.read(data, "dev")
    features = setup.featurize(examples, tokenizer)
    scores, predictions = evaluate_examples(model, setup, examples, features, tokenizer.pad_id)
    _, notes = predict(model, setup, examples, features, tokenizer.pad_id)
    gold = {e.id: e.gold_texts for e in examples}
    odds = notes["null_odds"]
    assert min(odds.values()) == pytest.approx(2, abs=1e-3) and max(odds.values()) > 8
    answered = {q for q, t in predictions.items() if t}
    assert answered == {q for q in gold if odds[q] <= threshold}
    # evaluate-v2.0.py on predictions.json alone (no na-prob file) gives what was printed
    official = squad_v2_scores(gold, predictions)
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "total"):
        assert scores[key] == pytest.approx(official[key], abs=1e-12), key
    assert scores["null_threshold"] == threshold
    assert scores["best_f1"] == pytest.approx(brute_force_best_f1(gold, notes["spans"], odds))
    assert scores["best_f1"] >= scores["f1"] - 1e-9 and "best_exact_thresh" in scores


def test_a_v11_model_on_a_v20_file_stops_saying_why(qa_model):
    model, setup, tokenizer, _, data, _ = qa_model
    v1 = TaskSetup(**{**setup.__dict__, "squad_v2": False})
    examples = v1.read(data, "dev")
    features = v1.featurize(examples, tokenizer)
    with pytest.raises(InputError, match="5 of 10 questions are unanswerable"):
        evaluate_examples(model, v1, examples, features, tokenizer.pad_id)


def test_evaluate_and_predict_take_null_threshold(qa_model, tmp_path, capsys):
    model, setup, tokenizer, directory, data, raw_odds = qa_model
    median = float(np.median(raw_odds))
    args = ["--model", str(directory), "--device", "cpu", f"--null-threshold={median}"]
    assert main(["evaluate", *args, "--file", str(data), "--out", str(tmp_path)]) == 0
    assert main(["predict", *args, "--input", str(data), "--out", str(tmp_path / "p.json")]) == 0
    written = json.loads((tmp_path / "p.json").read_text())
    printed = json.loads((tmp_path / "evaluate.json").read_text())["file"]
    gold = {e.id: e.gold_texts for e in setup.read(data, "dev")}
    assert printed["f1"] == pytest.approx(squad_v2_scores(gold, written)["f1"], abs=1e-12)
    assert printed["null_threshold"] == median
    assert 0 < sum(bool(t) for t in written.values()) < len(written)


def test_many_batches_show_a_progress_bar_on_stderr(qa_model, capsys):
    model, setup, tokenizer, _, data, _ = qa_model
    examples = setup.read(data, "dev")
    features = setup.featurize(examples, tokenizer)
    assert len(features) >= 20
    capsys.readouterr()
    few, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size=128)
    assert capsys.readouterr().err == ""
    many, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size=1)
    err = capsys.readouterr().err
    assert err.startswith("\rpredict:   0%") and f"| 0/{len(features)} [" in err
    assert many == few


@pytest.fixture(scope="module")
def conll_model(tiny_tokenizer, tmp_path_factory):
    """A tiny random tagger saved as a fine-tuned conll2003 directory, and a data folder with
    valid.txt and test.txt."""
    torch.manual_seed(1)
    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vocabulary = {"vocab_size": tiny_tokenizer.vocab_size, "pad_token_id": tiny_tokenizer.pad_id}
    config = preset_config("bert-tiny", **vocabulary, **sizes)
    spec = task_spec("conll2003")
    model = build_head(spec, build_encoder(config), len(spec.labels)).eval()
    directory = tmp_path_factory.mktemp("conll-model")
    save_pretrained(directory, model, config.to_dict())
    tiny_tokenizer.save(directory)
    save_task(directory, TaskSetup("conll2003", "tagging", list(spec.labels), 16))
    data = tmp_path_factory.mktemp("conll-data")
    for name, words in (("valid.txt", "the cat sat on the mat"), ("test.txt", "a dog ran")):
        tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
        lines = [f"{w} {t}" for w, t in zip(words.split(), tags, strict=False)]
        (data / name).write_text(("\n".join(lines) + "\n\n") * 2, encoding="utf-8")
    return directory, data


def test_evaluate_data_scores_test_too_as_the_written_predictions(conll_model, tmp_path):
    from muppets.tasks.metrics import entity_scores

    directory, data = conll_model
    args = ["evaluate", "--model", str(directory), "--data", str(data), "--out", str(tmp_path)]
    assert main([*args, "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "evaluate.json").read_text())
    assert set(results) == {"dev", "test"}
    for split, name in (("dev", "valid.txt"), ("test", "test.txt")):
        out = tmp_path / f"{split}.out"
        where = ["--input", str(data / name), "--out", str(out), "--device", "cpu"]
        assert main(["predict", "--model", str(directory), *where]) == 0
        rows = [line.split() for line in out.read_text().splitlines() if line]
        expected = entity_scores([[r[1] for r in rows]], [[r[2] for r in rows]])
        assert results[split]["f1"] == pytest.approx(expected["f1"], abs=1e-12)
        assert results[split]["precision"] == pytest.approx(expected["precision"], abs=1e-12)
