"""The metric code on hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from components.bakeoff_evaluator import metrics


def _one_hot(pred, n=10, p=1.0):
    probs = np.full((len(pred), n), (1 - p) / (n - 1))
    probs[np.arange(len(pred)), pred] = p
    return probs


def test_score_accuracy_interval_and_confusion():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 10)
    pred = labels.copy()
    pred[:5] = 9  # five mistakes, digits 0-4 predicted as 9
    m = metrics.score(labels, _one_hot(pred, p=0.9))
    assert m["accuracy"] == 0.95 and m["correct"] == 95 and m["examples"] == 100
    low, high = m["accuracy_ci95"]
    assert low < 0.95 < high and high - low < 0.12
    assert m["confusion_matrix"][0][9] == 1 and m["confusion_matrix"][9][9] == 10
    assert m["per_class"]["0"]["recall"] == pytest.approx(0.9)
    assert m["per_class"]["9"]["precision"] == pytest.approx(10 / 15)


def test_expected_calibration_error():
    labels = np.zeros(100, dtype=int)
    assert metrics.expected_calibration_error(labels, _one_hot(labels, p=1.0)) == pytest.approx(0.0)
    # Always 90 % confident, right half of the time: ECE is 0.4.
    pred = np.array([0, 1] * 50)
    assert metrics.expected_calibration_error(labels, _one_hot(pred, p=0.9)) == pytest.approx(0.4)


def test_mcnemar_exact_against_scipy_binomial():
    labels = np.zeros(30, dtype=int)
    a = np.zeros(30, dtype=int)
    b = np.zeros(30, dtype=int)
    a[:2] = 1   # a wrong on 2
    b[2:12] = 1  # b wrong on 10
    t = metrics.mcnemar_exact(labels, a, b)
    assert (t["only_first_correct"], t["only_second_correct"]) == (10, 2)
    assert t["p_value"] == pytest.approx(0.03857421875)  # 2 * P(X <= 2), X ~ Bin(12, 0.5)
    assert metrics.mcnemar_exact(labels, a, a)["p_value"] == 1.0


def test_decision_rule_and_tie_break():
    results = {"keras_model": {"accuracy": 0.98, "log_loss": 0.07},
               "pytorch_model": {"accuracy": 0.98, "log_loss": 0.05}}
    d = metrics.decide(results, min_accuracy=0.97)
    assert d["winner"] == "pytorch_model" and d["blessed"]
    assert "ties" in d["reasons"][0]
    results["keras_model"]["accuracy"] = 0.99
    d = metrics.decide(results, min_accuracy=0.995)
    assert d["winner"] == "keras_model" and not d["blessed"]
    assert "is below the minimum 0.9950" in d["reasons"][-1]
