"""Evaluation metrics, equal to the official ones (tests compare against the references).

- Classification: accuracy, binary F1 (positive class 1), Matthews correlation (as scikit-learn's
  `matthews_corrcoef`, multi-class too), Pearson/Spearman (as scipy's `pearsonr`/`spearmanr`;
  ties get average ranks). Written in numpy so that neither library is a runtime dependency.
  Values are fractions in [0, 1] (or [-1, 1]), as those libraries return them.
- SQuAD: EM/F1 exactly as the official `evaluate-v1.1.py` and `evaluate-v2.0.py` (answer
  normalisation, max over ground truths, percentages, v2.0's HasAns/NoAns breakdown and best
  no-answer threshold). v1.1 and v2.0 differ on empty answers: v1.1's F1 of two empty answers is
  0, v2.0's is 1.
- Entities: micro precision/recall/F1 over exact (type, start, end) chunks, as seqeval's default
  mode (conlleval semantics: an `I-X` that cannot continue a chunk starts one).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from muppets.data.readers.glue import glue_task
from muppets.tasks.tag_decoding import entity_spans

# ---------------------------------------------------------------- classification and regression


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def binary_f1(predictions: Sequence, labels: Sequence) -> float:
    """F1 of the positive class 1 (scikit-learn's `f1_score`, zero_division=0)."""
    p, y = _pair(predictions, labels)
    tp, fp, fn = (
        np.sum((p == 1) & (y == 1)),
        np.sum((p == 1) & (y != 1)),
        np.sum((p != 1) & (y == 1)),
    )
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def matthews_corr(predictions: Sequence, labels: Sequence) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K), 0.0 when undefined, as scikit-learn."""
    p, y = _pair(predictions, labels)
    classes, index = np.unique(np.concatenate([y, p]), return_inverse=True)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)  # (true, predicted)
    np.add.at(confusion, (index[: len(y)], index[len(y) :]), 1)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n_correct, n = np.trace(confusion), p_sum.sum()
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ypyp * cov_ytyt))


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson's r, computed as scipy.stats.pearsonr does; nan when an input is constant."""
    x, y = (a.astype(np.float64) for a in _pair(predictions, labels))
    xm, ym = x - x.mean(), y - y.mean()
    if not xm.any() or not ym.any():
        return float("nan")
    x_max, y_max = np.abs(xm).max(), np.abs(ym).max()
    norm_x, norm_y = x_max * np.linalg.norm(xm / x_max), y_max * np.linalg.norm(ym / y_max)
    return float(np.clip(np.dot(xm / norm_x, ym / norm_y), -1.0, 1.0))


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman's rho: the correlation of the ranks (ties share their average rank), computed as
    scipy.stats.spearmanr does (np.corrcoef of the ranks); nan when an input is constant."""
    x, y = _pair(predictions, labels)
    if (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    return float(np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1])


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of their ranks (scipy.stats.rankdata "average")."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the last rank of each group of equal values
    return (ends - (counts - 1) / 2.0)[inverse]


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
    """evaluate-v1.1.py: {"exact_match", "f1"} in percent over all gold questions; a question
    without a prediction scores 0 and is counted in "missing"."""
    em = f1 = 0.0
    missing = 0
    for qid, answers in gold.items():
        if qid not in predictions:
            missing += 1
            continue
        em += max(float(exact_match(predictions[qid], a)) for a in answers)
        f1 += max(squad_f1(predictions[qid], a) for a in answers)
    total = len(gold)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total, "total": total,
            "missing": missing}  # fmt: skip


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
    return {"exact": 100.0 * sum(exact[q] for q in qids) / total,
            "f1": 100.0 * sum(f1[q] for q in qids) / total, "total": total}  # fmt: skip


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
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sequences but {len(predicted)} predicted ones")
    gold_chunks, pred_chunks = set(), set()
    for n, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sequence {n}: {len(g)} gold tags but {len(p)} predicted tags")
        gold_chunks.update((n, *chunk) for chunk in entity_spans(g))
        pred_chunks.update((n, *chunk) for chunk in entity_spans(p))
    correct = gold_chunks & pred_chunks
    per_type = {}
    for kind in sorted({c[1] for c in gold_chunks | pred_chunks}):
        counts = [sum(c[1] == kind for c in s) for s in (correct, pred_chunks, gold_chunks)]
        per_type[kind] = {**_prf(*counts), "support": counts[2]}
    return {**_prf(len(correct), len(pred_chunks), len(gold_chunks)), "per_type": per_type}


def _prf(n_correct: int, n_predicted: int, n_gold: int) -> dict[str, float]:
    precision = n_correct / n_predicted if n_predicted else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
