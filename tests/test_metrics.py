"""Metrics: exact values computed by hand on small fixed inputs. The classification, correlation
and entity metrics are thin calls into scikit-learn, scipy and seqeval, so these tests pin the
call (argument order, zero-division and tie handling, the tagging scheme) rather than compare
a library with itself."""

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


def test_correlations_by_hand():
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84)
    assert pearson([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(9 / np.sqrt(84), abs=1e-15)
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(
        np.sqrt(0.9), abs=1e-15
    )
    # monotone but not linear: rank correlation 1, linear correlation below 1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0, abs=1e-15)
    assert pearson([1, 2, 3, 4], [1, 4, 9, 100]) < 0.9
    # labels first, predictions second matters for F1 but not for MCC: swap them
    assert binary_f1([1, 1, 0, 0], [1, 0, 0, 0]) == 2 / 3  # tp 1, fp 1, fn 0
    assert binary_f1([1, 0, 0, 0], [1, 1, 0, 0]) == 2 / 3  # tp 1, fp 0, fn 1
    assert binary_f1([0, 0, 0], [1, 1, 0]) == 0.0  # no predicted positive: 0.0, no warning


def test_glue_metrics_dispatch():
    assert glue_metrics("cola", PREDS, LABELS) == {"mcc": matthews_corr(PREDS, LABELS)}
    assert glue_metrics("rte", PREDS, LABELS) == {"accuracy": 0.7}
    assert glue_metrics("mrpc", PREDS, LABELS) == {"accuracy": 0.7, "f1": 8 / 11}
    assert glue_metrics("stsb", SCORES, GOLD_SCORES) == {
        "pearson": pearson(SCORES, GOLD_SCORES),
        "spearman": spearman(SCORES, GOLD_SCORES),
    }


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
    assert scores == {"exact": 100 / 3, "f1": 100 * (2 / 3 + 1) / 3, "total": 3, "missing": 1}
    assert squad_v1_scores({"q": ["The Broncos", "x"]}, {"q": "broncos."})["exact"] == 100.0


def test_squad_v2_breakdown_and_best_threshold():
    gold = {"q1": ["Denver Broncos"], "q2": [], "q3": ["the 1990s", "1990s decade"], "q4": []}
    preds = {"q1": "Broncos", "q2": "", "q3": "1990s", "q4": "something"}
    na_probs = {"q1": 0.9, "q2": 0.2, "q3": 0.1, "q4": 0.8}
    out = squad_v2_scores(gold, preds, na_probs)
    # exact [0, 1, 1, 0]; f1 [2/3, 1, 1, 0]
    assert out == pytest.approx(
        {
            "exact": 50.0,
            "f1": 100 * (2 / 3 + 2) / 4,
            "total": 4,
            "missing": 0,
            "HasAns_exact": 50.0,
            "HasAns_f1": 100 * (2 / 3 + 1) / 2,
            "HasAns_total": 2,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
            "NoAns_total": 2,
            # scanning na_prob upwards: q3 (+1) -> 3 of 4 at threshold 0.1; q2 +0; q4 -1;
            # q1 +0 / +2/3
            "best_exact": 75.0,
            "best_exact_thresh": 0.1,
            "best_f1": 75.0,
            "best_f1_thresh": 0.1,
        },
        abs=1e-12,
    )
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


def ours(gold, pred):
    out = entity_scores(gold, pred)
    return out["precision"], out["recall"], out["f1"]


def test_entity_scores_iob1_and_tricky_chunks():
    # IOB1 input (CoNLL-2003's original scheme): converting to IOB2 changes no chunk
    iob1_gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["I-ORG", "B-ORG", "I-MISC"]]
    iob1_pred = [["I-PER", "B-PER", "I-PER", "O", "I-ORG"], ["I-ORG", "I-ORG", "I-MISC"]]
    converted = ([iob1_to_iob2(s) for s in iob1_gold], [iob1_to_iob2(s) for s in iob1_pred])
    # gold PER(0-1) PER(2) LOC(4) | ORG(0) ORG(1) MISC(2); pred PER(0) PER(1-2) ORG(4) | ORG(0-1)
    # MISC(2): only MISC matches
    expected = (1 / 5, 1 / 6, 2 * (1 / 5) * (1 / 6) / (1 / 5 + 1 / 6))
    assert ours(*converted) == ours(iob1_gold, iob1_pred) == expected
    # a chunk never runs across sentences: I-PER opening sentence 2 starts its own chunk
    assert ours([["B-PER", "I-PER"], ["I-PER", "O"]], [["B-PER", "I-PER"], ["B-PER", "I-PER"]]) == (
        0.5,
        0.5,
        0.5,
    )
    # BIOES prefixes: E- and S- close a chunk, so gold is PER(0-1) LOC(2) LOC(3-4) and the
    # prediction PER(0-1) LOC(2-4)
    gold = [["B-PER", "E-PER", "S-LOC", "I-LOC", "E-LOC", "O"]]
    pred = [["B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "O"]]
    assert ours(gold, pred) == pytest.approx((1 / 2, 1 / 3, 0.4), abs=1e-15)
    # B- after B- and a type switch inside I- both start chunks
    assert ours([["B-X", "B-X", "I-Y"]], [["B-X", "I-X", "I-Y"]]) == pytest.approx(
        (1 / 2, 1 / 3, 0.4), abs=1e-15
    )
    # a type seen only in predictions: support 0, every ratio 0.0 (no warning)
    out = entity_scores([["O", "O"]], [["B-X", "O"]])
    assert out == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "per_type": {"X": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}},
    }


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
    assert squad_v1_scores({q: a for q, a in gold.items() if a}, first)["exact"] == 100.0
