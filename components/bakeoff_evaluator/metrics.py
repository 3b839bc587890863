"""The one piece of metric code every candidate is scored with, and the paired comparison."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

NUM_CLASSES = 10
ECE_BINS = 15


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Gap between confidence and accuracy, weighted over equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def score(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy with a 95 % Wilson interval, log loss, ECE, per-class P/R/F1, confusion matrix."""
    predicted = probs.argmax(axis=1)
    n = len(labels)
    correct = int((predicted == labels).sum())
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    return {
        "examples": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": [float(ci.low), float(ci.high)],
        "log_loss": float(skm.log_loss(labels, np.clip(probs, 1e-7, 1.0), labels=classes)),
        "expected_calibration_error": expected_calibration_error(labels, probs),
        "per_class": {str(c): {"precision": float(precision[c]), "recall": float(recall[c]),
                               "f1": float(f1[c]), "support": int(support[c])} for c in classes},
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


def mcnemar_exact(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test: only the examples the two models disagree on count."""
    a_right, b_right = pred_a == labels, pred_b == labels
    only_a = int((a_right & ~b_right).sum())
    only_b = int((~a_right & b_right).sum())
    p = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    return {"only_first_correct": only_a, "only_second_correct": only_b, "p_value": float(p)}


def pairwise_mcnemar(labels: np.ndarray, predictions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"first": a, "second": b, **mcnemar_exact(labels, predictions[a], predictions[b])}
            for a, b in itertools.combinations(sorted(predictions), 2)]


def decide(results: dict[str, dict[str, Any]], min_accuracy: float) -> dict[str, Any]:
    """Winner: highest accuracy; ties go to the lower log loss, then to the name in order.

    Blessed when the winner's accuracy reaches `min_accuracy`.
    """
    ranked = sorted(results, key=lambda k: (-results[k]["accuracy"], results[k]["log_loss"], k))
    winner = ranked[0]
    acc = results[winner]["accuracy"]
    reasons = []
    for other in ranked[1:]:
        o = results[other]
        if o["accuracy"] == acc:
            reasons.append(f"{winner} ties {other} on accuracy ({acc:.4f}) and wins on log loss "
                           f"({results[winner]['log_loss']:.4f} vs {o['log_loss']:.4f})")
        else:
            reasons.append(f"{winner} has the higher test accuracy: {acc:.4f} vs {other} {o['accuracy']:.4f}")
    blessed = acc >= min_accuracy
    reasons.append(f"{winner} accuracy {acc:.4f} {'reaches' if blessed else 'is below'} "
                   f"the minimum {min_accuracy:.4f}: {'blessed' if blessed else 'not blessed'}")
    return {"winner": winner, "blessed": blessed, "ranking": ranked, "reasons": reasons,
            "rule": {"primary_metric": "accuracy", "tie_break": ["log_loss", "name"],
                     "min_accuracy": min_accuracy}}
