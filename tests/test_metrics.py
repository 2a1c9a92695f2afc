"""Metrics: exact values on hand-built inputs, and equality with the references (scikit-learn,
scipy, seqeval) where they are installed."""

from pathlib import Path

import numpy as np
import pytest

from muppets.data.readers.squad import read_qa
from muppets.tasks.metrics import (
    accuracy,
    binary_f1,
    entity_scores,
    exact_match,
    glue_metrics,
    matthews_corr,
    normalize_answer,
    pearson,
    spearman,
    squad_f1,
    squad_v1_scores,
    squad_v2_scores,
)
from muppets.tasks.tag_decoding import iob1_to_iob2

LABELS = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
PREDS = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]  # tp 4, tn 3, fp 1, fn 2
SCORES = [0.5, 2.0, 3.5, 3.5, 4.0, 1.0, 2.5, 5.0]  # ties on purpose (average ranks)
GOLD_SCORES = [1.0, 1.8, 3.0, 4.2, 4.2, 0.4, 3.0, 4.6]


def test_classification_metrics_exact_values():
    assert accuracy(PREDS, LABELS) == 0.7
    assert binary_f1(PREDS, LABELS) == 8 / 11  # 2tp / (2tp + fp + fn)
    assert matthews_corr(PREDS, LABELS) == pytest.approx(10 / np.sqrt(600), abs=1e-15)
    assert matthews_corr([0, 2, 2, 2, 1, 0, 1, 1], [0, 1, 2, 2, 1, 0, 2, 1]) == pytest.approx(
        13 / 21, abs=1e-15
    )
    assert matthews_corr([1, 1, 1], [0, 1, 1]) == 0.0  # undefined -> 0.0, as scikit-learn
    assert binary_f1([0, 0], [0, 0]) == 0.0
    assert pearson(SCORES, GOLD_SCORES) == pytest.approx(0.9458299705743263, abs=1e-15)
    assert spearman(SCORES, GOLD_SCORES) == pytest.approx(0.9454719096527425, abs=1e-15)
    assert np.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(spearman([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))
    with pytest.raises(
        ValueError, match=r"need two 1-d sequences of one length, got \(2,\) and \(3,\)"
    ):
        accuracy([1, 0], [1, 0, 1])


def test_classification_metrics_equal_sklearn_and_scipy():
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    assert accuracy(PREDS, LABELS) == sk.accuracy_score(LABELS, PREDS)
    assert binary_f1(PREDS, LABELS) == sk.f1_score(LABELS, PREDS)
    rng = np.random.default_rng(0)
    for trial in range(40):  # scikit-learn takes ~15 ms a call here
        n = int(rng.integers(3, 40))
        y, p = rng.integers(0, 3 if trial % 2 else 2, (2, n))
        assert matthews_corr(p, y) == pytest.approx(sk.matthews_corrcoef(y, p), abs=1e-15)
        x = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n)
        z = x + rng.normal(size=n)
        assert pearson(x, z) == pytest.approx(stats.pearsonr(x, z)[0], abs=1e-14)
        assert spearman(x, z) == pytest.approx(stats.spearmanr(x, z)[0], abs=1e-14)


def test_glue_metrics_dispatch():
    assert glue_metrics("cola", PREDS, LABELS) == {"mcc": matthews_corr(PREDS, LABELS)}
    assert glue_metrics("rte", PREDS, LABELS) == {"accuracy": 0.7}
    assert glue_metrics("mrpc", PREDS, LABELS) == {"accuracy": 0.7, "f1": 8 / 11}
    assert glue_metrics("stsb", SCORES, GOLD_SCORES) == {
        "pearson": pearson(SCORES, GOLD_SCORES), "spearman": spearman(SCORES, GOLD_SCORES),
    }  # fmt: skip


def test_squad_normalisation_as_the_official_script():
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("an apple, a day\tand THE end.") == "apple day and end"
    assert normalize_answer("theatre anthem") == "theatre anthem"  # whole words only
    assert normalize_answer("A.B.C. (the) 1,000") == "abc 1000"  # punctuation goes before articles
    assert normalize_answer("the-a") == "thea"  # punctuation goes first: no article is left
    assert normalize_answer("Café’s") == "café’s"  # ’ is not in string.punctuation


def test_squad_em_f1_known_values():
    assert exact_match("The Denver Broncos!", "denver broncos")
    assert squad_f1("the cat sat on the mat", "cat on mat") == 2 * 0.75 / 1.75
    assert squad_f1("Broncos", "Denver Broncos") == pytest.approx(2 / 3, abs=1e-15)
    assert squad_f1("a", "the") == 0.0  # v1.1: two empty answers score 0
    assert squad_f1("a", "the", version="2.0") == 1.0  # v2.0: no-answer agrees with no-answer
    assert squad_f1("", "cat", version="2.0") == 0.0
    gold = {
        "q1": ["the Denver Broncos team", "Denver Broncos"],
        "q2": ["1990s", "the 1990s decade"],
        "q3": ["x"],
    }
    scores = squad_v1_scores(gold, {"q1": "Broncos", "q2": "the 1990s"})
    # q1: EM 0, F1 max(1/2, 2/3); q2: EM 1 ("the 1990s" -> "1990s"), F1 1; q3 missing: 0
    assert scores == {"exact_match": 100 / 3, "f1": 100 * (2 / 3 + 1) / 3, "total": 3, "missing": 1}
    assert squad_v1_scores({"q": ["The Broncos", "x"]}, {"q": "broncos."})["exact_match"] == 100.0


def test_squad_v2_breakdown_and_best_threshold():
    gold = {"q1": ["Denver Broncos"], "q2": [], "q3": ["the 1990s", "1990s decade"], "q4": []}
    preds = {"q1": "Broncos", "q2": "", "q3": "1990s", "q4": "something"}
    na_probs = {"q1": 0.9, "q2": 0.2, "q3": 0.1, "q4": 0.8}
    out = squad_v2_scores(gold, preds, na_probs)
    # exact [0, 1, 1, 0]; f1 [2/3, 1, 1, 0]
    assert out == pytest.approx({
        "exact": 50.0, "f1": 100 * (2 / 3 + 2) / 4, "total": 4, "missing": 0,
        "HasAns_exact": 50.0, "HasAns_f1": 100 * (2 / 3 + 1) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
        # scanning na_prob upwards: q3 (+1) -> 3 of 4 at threshold 0.1; q2 +0; q4 -1; q1 +0 / +2/3
        "best_exact": 75.0, "best_exact_thresh": 0.1, "best_f1": 75.0, "best_f1_thresh": 0.1,
    }, abs=1e-12)  # fmt: skip
    # above the threshold the answer counts as "": right for q4 (no answer), wrong for q1
    out = squad_v2_scores(gold, preds, na_probs, na_prob_threshold=0.5)
    assert (out["exact"], out["f1"], out["HasAns_f1"], out["NoAns_exact"]) == (
        75.0,
        75.0,
        50.0,
        100.0,
    )
    # a gold answer that normalises to "" counts as no answer in scoring but HasAns in the breakdown
    out = squad_v2_scores({"q": ["The"]}, {"q": ""})
    assert (out["exact"], out["HasAns_total"], "NoAns_total" in out) == (100.0, 1, False)


GOLD_TAGS = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG"],
    ["I-MISC", "I-MISC", "O"],
]
PRED_TAGS = [
    ["B-PER", "I-PER", "O", "I-LOC"],
    ["O", "B-ORG", "I-LOC", "I-ORG"],
    ["B-MISC", "I-MISC", "B-MISC"],
]


def test_entity_scores_exact_values():
    # gold: PER, LOC, ORG(1-3), MISC(0-1; I- after the start begins a chunk) = 4 chunks
    # predicted: PER, LOC (I- after O), ORG(1), LOC(2), ORG(3) (type switches), MISC, MISC = 7
    out = entity_scores(GOLD_TAGS, PRED_TAGS)
    assert (out["precision"], out["recall"], out["f1"]) == (
        3 / 7,
        3 / 4,
        2 * (3 / 7) * (3 / 4) / (3 / 7 + 3 / 4),
    )
    assert out["per_type"] == {
        "LOC": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
        "MISC": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="sequence 1: 2 gold tags but 1 predicted tags"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])


def seqeval_scores(gold, pred):
    metrics = pytest.importorskip("seqeval.metrics")
    return tuple(
        f(gold, pred) for f in (metrics.precision_score, metrics.recall_score, metrics.f1_score)
    )


def ours(gold, pred):
    out = entity_scores(gold, pred)
    return out["precision"], out["recall"], out["f1"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # seqeval warns on undefined precision
def test_entity_scores_equal_seqeval():
    assert ours(GOLD_TAGS, PRED_TAGS) == seqeval_scores(GOLD_TAGS, PRED_TAGS)
    # IOB1 input (CoNLL-2003's original scheme): converting to IOB2 changes nothing for seqeval
    iob1_gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["I-ORG", "B-ORG", "I-MISC"]]
    iob1_pred = [["I-PER", "B-PER", "I-PER", "O", "I-ORG"], ["I-ORG", "I-ORG", "I-MISC"]]
    converted = ([iob1_to_iob2(s) for s in iob1_gold], [iob1_to_iob2(s) for s in iob1_pred])
    assert ours(*converted) == seqeval_scores(*converted) == seqeval_scores(iob1_gold, iob1_pred)
    # gold PER(0-1) PER(2) LOC(4) | ORG(0) ORG(1) MISC(2); pred PER(0) PER(1-2) ORG(4) | ORG(0-1)
    # MISC(2): only MISC matches
    assert ours(*converted) == (1 / 5, 1 / 6, 2 * (1 / 5) * (1 / 6) / (1 / 5 + 1 / 6))
    rng = np.random.default_rng(0)
    tags = np.array(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"])
    for _ in range(100):
        lengths = rng.integers(1, 8, int(rng.integers(1, 5)))
        gold = [list(rng.choice(tags, n)) for n in lengths]
        pred = [list(rng.choice(tags, n)) for n in lengths]
        assert ours(gold, pred) == seqeval_scores(gold, pred)


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not here")
def test_squad_v2_dev_baselines():
    examples, _ = read_qa(DATA / "squad-v2.0" / "dev-v2.0.json")
    gold = {e.id: e.gold_texts for e in examples}
    # answering "" everywhere: the known 50.07 no-answer baseline (5,945 of 11,873)
    out = squad_v2_scores(gold, {qid: "" for qid in gold})
    assert (out["exact"], out["f1"]) == (100 * 5945 / 11873, 100 * 5945 / 11873)
    assert (out["HasAns_exact"], out["NoAns_exact"]) == (0.0, 100.0)
    # the first gold answer scores 100 everywhere
    first = {e.id: e.gold_texts[0] if e.gold_texts else "" for e in examples}
    assert squad_v2_scores(gold, first)["f1"] == 100.0
    assert squad_v1_scores({q: a for q, a in gold.items() if a}, first)["exact_match"] == 100.0
