"""Evaluation metrics, through the libraries that define them.

- Classification: accuracy, binary F1 (positive class 1) and Matthews correlation (multi-class
  too) are scikit-learn's; Pearson/Spearman are scipy's. Values are fractions in [0, 1] (or
  [-1, 1]), as those libraries return them; an undefined correlation is nan (MCC: 0.0).
- SQuAD: EM/F1 exactly as the official `evaluate-v1.1.py` and `evaluate-v2.0.py` (answer
  normalisation, max over ground truths, percentages, v2.0's HasAns/NoAns breakdown and best
  no-answer threshold). v1.1 and v2.0 differ on empty answers: v1.1's F1 of two empty answers is
  0, v2.0's is 1. No library implements these scripts, so their logic lives here.
- Entities: seqeval's micro precision/recall/F1 over exact (type, start, end) chunks in its
  default mode (conlleval semantics: an `I-X` that cannot continue a chunk starts one).

scikit-learn, scipy and seqeval are imported inside the functions, so `import muppets` stays fast.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from muppets.data.readers.glue import glue_task

# ---------------------------------------------------------------- classification and regression


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    from sklearn.metrics import accuracy_score

    p, y = _pair(predictions, labels)
    return float(accuracy_score(y, p))


def binary_f1(predictions: Sequence, labels: Sequence) -> float:
    """F1 of the positive class 1; 0.0 when there is no true or predicted positive."""
    from sklearn.metrics import f1_score

    p, y = _pair(predictions, labels)
    return float(f1_score(y, p, pos_label=1, zero_division=0))


def matthews_corr(predictions: Sequence, labels: Sequence) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K); 0.0 when undefined."""
    from sklearn.metrics import matthews_corrcoef

    p, y = _pair(predictions, labels)
    return float(matthews_corrcoef(y, p))


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson's r; nan when an input is constant."""
    from scipy.stats import pearsonr

    x, y = (a.astype(np.float64) for a in _pair(predictions, labels))
    with warnings.catch_warnings():  # a constant input warns and gives nan, which we document
        warnings.simplefilter("ignore")
        return float(pearsonr(x, y)[0])


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman's rho (ties share their average rank); nan when an input is constant."""
    from scipy.stats import spearmanr

    x, y = (a.astype(np.float64) for a in _pair(predictions, labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y)[0])


def _pair(predictions: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"need two 1-d sequences of one length, got {p.shape} and {y.shape}")
    return p, y


def glue_metrics(task: str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The metrics GLUE reports for `task` (label ids, or floats for STS-B)."""
    metric = glue_task(task).metric
    if metric == "mcc":
        return {"mcc": matthews_corr(predictions, labels)}
    if metric == "accuracy":
        return {"accuracy": accuracy(predictions, labels)}
    if metric == "accuracy_f1":
        return {"accuracy": accuracy(predictions, labels), "f1": binary_f1(predictions, labels)}
    if metric == "pearson_spearman":
        return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}
    raise ValueError(f"unknown metric {metric!r}")


# ---------------------------------------------------------------- SQuAD (official scripts)

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def squad_f1(prediction: str, ground_truth: str, version: str = "1.1") -> float:
    """Token-overlap F1 of normalised answers; with version "2.0" two empty answers score 1."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    if version == "2.0" and (not pred or not gold):
        return float(pred == gold)  # evaluate-v2.0.py: no-answer F1 is 1 if both are empty
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_v1_scores(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """evaluate-v1.1.py's exact_match and f1 in percent over all gold questions, named "exact"
    and "f1" as evaluate-v2.0.py names them (one name in both versions); a question without a
    prediction scores 0 and is counted in "missing"."""
    em = f1 = 0.0
    missing = 0
    for qid, answers in gold.items():
        if qid not in predictions:
            missing += 1
            continue
        em += max(float(exact_match(predictions[qid], a)) for a in answers)
        f1 += max(squad_f1(predictions[qid], a) for a in answers)
    total = len(gold)
    return {
        "exact": 100.0 * em / total,
        "f1": 100.0 * f1 / total,
        "total": total,
        "missing": missing,
    }


def squad_v2_scores(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_threshold: float = 1.0,
) -> dict[str, float]:
    """evaluate-v2.0.py: exact/f1/total overall and for HasAns/NoAns (percent); with `na_probs`
    (the no-answer score per question) also best_exact/best_f1 and their thresholds.

    A gold list without answers means unanswerable (the only right prediction is ""). A missing
    prediction is scored as "" and counted in "missing" (the official script would fail).
    """
    has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    preds = {qid: predictions.get(qid, "") for qid in gold}
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        exact_raw[qid] = max(float(exact_match(preds[qid], a)) for a in answers)
        f1_raw[qid] = max(squad_f1(preds[qid], a, version="2.0") for a in answers)
    probs = {qid: 0.0 for qid in gold} if na_probs is None else dict(na_probs)
    exact = _apply_na_threshold(exact_raw, probs, has_ans, na_prob_threshold)
    f1 = _apply_na_threshold(f1_raw, probs, has_ans, na_prob_threshold)
    out = _eval_dict(exact, f1, list(gold))
    out["missing"] = sum(qid not in predictions for qid in gold)
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid in gold if has_ans[qid] == wanted]
        if qids:
            out.update({f"{name}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
    if na_probs is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            out[f"best_{name}"], out[f"best_{name}_thresh"] = _best_threshold(
                preds, raw, probs, has_ans
            )
    return out


def _apply_na_threshold(scores, na_probs, has_ans, threshold) -> dict[str, float]:
    return {
        qid: float(not has_ans[qid]) if na_probs[qid] > threshold else s
        for qid, s in scores.items()
    }


def _eval_dict(exact, f1, qids) -> dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / total,
        "f1": 100.0 * sum(f1[q] for q in qids) / total,
        "total": total,
    }


def _best_threshold(preds, scores, na_probs, has_ans) -> tuple[float, float]:
    """evaluate-v2.0.py find_best_thresh: answer "" above the threshold; scan thresholds in
    increasing na_prob order."""
    score = best = sum(not v for v in has_ans.values())
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            score += scores[qid]
        elif preds[qid]:
            score -= 1
        if score > best:
            best, best_thresh = score, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


# ---------------------------------------------------------------- entities (seqeval default)


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, object]:
    """Micro precision/recall/F1 over exact chunks (fractions), and the same per entity type
    with its support (the number of gold chunks); 0.0 where a ratio is undefined."""
    from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sequences but {len(predicted)} predicted ones")
    for n, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sequence {n}: {len(g)} gold tags but {len(p)} predicted tags")
    gold, predicted = [list(g) for g in gold], [list(p) for p in predicted]
    micro = precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)
    # average=None: one entry per type, in seqeval's order (sorted over gold and predicted types)
    kinds = sorted({kind for kind, _, _ in get_entities(gold) + get_entities(predicted)})
    per_type = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
    return {
        **_prf(*micro[:3]),
        "per_type": {
            kind: {**_prf(p, r, f), "support": int(s)}
            for kind, p, r, f, s in zip(kinds, *per_type, strict=True)
        },
    }


def _prf(precision: float, recall: float, f1: float) -> dict[str, float]:
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
