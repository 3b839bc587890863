"""The one piece of metric code every candidate is scored with, and the paired comparison."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from components.bakeoff_evaluator.rule import DecisionRule

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


def _pair(comparisons: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    for t in comparisons:
        if {t["first"], t["second"]} == {a, b}:
            return t
    raise KeyError(f"no comparison between {a} and {b}")


def decide(results: dict[str, dict[str, Any]], rule: DecisionRule, champion: str | None = None,
           comparisons: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The winner among the challengers (every result but `champion`), and whether it is blessed.

    Ranking: higher primary metric, then lower log loss, then name. Blessed when the winner
    reaches rule.min_metric and, if a champion exists, passes rule.champion_policy against it.
    """
    key = rule.primary_metric
    challengers = [n for n in results if n != champion]
    ranked = sorted(challengers, key=lambda n: (-results[n][key], results[n]["log_loss"], n))
    winner = ranked[0]
    value = results[winner][key]
    reasons = []
    for other in ranked[1:]:
        o = results[other]
        if o[key] == value:
            reasons.append(f"{winner} ties {other} on {key} ({value:.4f}) and wins on log loss "
                           f"({results[winner]['log_loss']:.4f} vs {o['log_loss']:.4f})")
        else:
            reasons.append(f"{winner} has the higher test {key}: {value:.4f} vs {other} {o[key]:.4f}")
    blessed = value >= rule.min_metric
    reasons.append(f"{winner} {key} {value:.4f} {'reaches' if blessed else 'is below'} "
                   f"the minimum {rule.min_metric:.4f}")
    if champion is not None:
        c_value = results[champion][key]
        delta = value - c_value
        if rule.champion_policy == "better_by":
            passes = delta >= rule.champion_min_delta
            reasons.append(f"{winner} {'beats' if passes else 'does not beat'} the champion by the required "
                           f"{rule.champion_min_delta:.4f}: {value:.4f} vs {c_value:.4f} (difference {delta:+.4f})")
        else:
            test = _pair(comparisons or [], winner, champion)
            worse = delta < 0 and test["p_value"] < rule.champion_alpha
            passes = not worse
            reasons.append(f"{winner} is {'significantly worse than' if worse else 'not significantly worse than'}"
                           f" the champion: {value:.4f} vs {c_value:.4f}, McNemar p = {test['p_value']:.4g}"
                           f" (champion_alpha {rule.champion_alpha})")
        blessed = blessed and passes
    else:
        reasons.append("no champion in the registry: the winner is compared with the minimum only")
    reasons.append(f"decision: {winner} is {'blessed' if blessed else 'NOT blessed'}")
    return {"winner": winner, "blessed": blessed, "ranking": ranked, "champion": champion,
            "reasons": reasons, "rule": dataclasses.asdict(rule)}


def latency_and_throughput(predict, images: np.ndarray, single_calls: int = 100,
                           batch: int = 256, batches: int = 8) -> dict[str, float]:
    """Latency at batch 1 (p50/p95, ms) and throughput at batch 256 (examples/s), after warm-up."""
    for _ in range(5):
        predict(images[:1])
        predict(images[:batch])
    times = []
    for i in range(single_calls):
        start = time.perf_counter()
        predict(images[i % len(images):i % len(images) + 1])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(batches):
        predict(images[(i * batch) % max(1, len(images) - batch):][:batch])
    elapsed = time.perf_counter() - start
    return {"latency_ms_p50": float(np.percentile(times, 50) * 1000),
            "latency_ms_p95": float(np.percentile(times, 95) * 1000),
            "throughput_per_s": float(batches * min(batch, len(images)) / elapsed)}
