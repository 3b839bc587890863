"""The one piece of metric code every candidate is scored with, and the paired comparisons
(exact McNemar, paired bootstrap) the decision reads."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

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
    """Accuracy with a 95 % Wilson interval, log loss, ECE, per-class P/R/F1, confusion matrix; the
    classes are the columns of `probs` (class i: label i)."""
    predicted = probs.argmax(axis=1)
    n = len(labels)
    correct = int((predicted == labels).sum())
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    classes = list(range(probs.shape[1]))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    return {
        "examples": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": [float(ci.low), float(ci.high)],
        "macro_f1": float(np.mean(f1)),
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


# Paired bootstrap of the accuracy differences: seeded, so the same scores give the same intervals.
BOOTSTRAP_REPLICATES = 10000
BOOTSTRAP_SEED = 0
BOOTSTRAP = {"replicates": BOOTSTRAP_REPLICATES, "seed": BOOTSTRAP_SEED, "confidence": 0.95,
             "method": "paired percentile bootstrap: every model on the same resamples of the examples"}


def paired_bootstrap(labels: np.ndarray, predictions: dict[str, np.ndarray],
                     replicates: int = BOOTSTRAP_REPLICATES,
                     seed: int = BOOTSTRAP_SEED) -> dict[tuple[str, str], list[float]]:
    """95 % percentile interval of accuracy(first) - accuracy(second) for every pair (sorted names).

    Every model is scored on the same resamples of the examples, so each interval keeps the
    pairing (the models' errors on an example move together), as McNemar's test does. An example
    enters a model's accuracy only through its pattern of right and wrong across the models, so
    drawing N examples with replacement is drawing the N patterns' counts from a multinomial with
    the patterns' frequencies: the same bootstrap distribution as resampling indices (the tests
    check it against that direct computation), at a cost that does not grow with N.
    """
    names = sorted(predictions)
    n = len(labels)
    correct = np.stack([predictions[name] == labels for name in names], axis=1)  # [N, M]
    patterns, counts = np.unique(correct, axis=0, return_counts=True)  # [P, M], [P]
    drawn = np.random.default_rng(seed).multinomial(n, counts / n, size=replicates)  # [B, P]
    accuracy = drawn @ patterns.astype(np.float64) / n  # [B, M]
    out = {}
    for i, j in itertools.combinations(range(len(names)), 2):
        low, high = np.percentile(accuracy[:, i] - accuracy[:, j], [2.5, 97.5])
        out[(names[i], names[j])] = [float(low), float(high)]
    return out


def pairwise_comparisons(labels: np.ndarray, predictions: dict[str, np.ndarray],
                         replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> list[dict[str, Any]]:
    """Every pair: exact McNemar, the accuracy difference (first - second) and its paired bootstrap 95 % CI."""
    intervals = paired_bootstrap(labels, predictions, replicates, seed)
    out = []
    for t in pairwise_mcnemar(labels, predictions):
        a, b = t["first"], t["second"]
        difference = float((predictions[a] == labels).mean() - (predictions[b] == labels).mean())
        out.append({**t, "accuracy_difference": difference, "accuracy_difference_ci95": intervals[(a, b)]})
    return out


def corruption_accuracy(labels: np.ndarray, predictions: np.ndarray, names: tuple[str, ...],
                        not_scored: int = 255) -> dict[str, Any]:
    """Accuracy under each corruption (predictions [C, N] in `names` order, `not_scored` where an
    example was not given that corruption), the examples each was measured on, and their mean."""
    per, examples = {}, {}
    for k, name in enumerate(names):
        scored = predictions[k] != not_scored
        examples[name] = int(scored.sum())
        per[name] = float((predictions[k][scored] == labels[scored]).mean()) if scored.any() else float("nan")
    return {"per_corruption": per, "examples": examples, "mean_accuracy": float(np.mean(list(per.values())))}
