"""The metric code on hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

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
    assert t["p_value"] == pytest.approx(stats.binomtest(2, 12, 0.5, alternative="two-sided").pvalue)
    assert metrics.mcnemar_exact(labels, a, a)["p_value"] == 1.0


def _results(**accuracies):
    return {name: {"accuracy": acc, "macro_f1": acc, "log_loss": 0.1} for name, acc in accuracies.items()}


def _comparison(first, second, p):
    return [{"first": first, "second": second, "only_first_correct": 0, "only_second_correct": 0, "p_value": p}]


# (case, results, champion, comparisons, rule, expected winner, expected blessed, phrase in reasons)
DECISIONS = [
    ("clear win, no champion", _results(a=0.99, b=0.97), None, [], metrics.DecisionRule(min_metric=0.98),
     "a", True, "no champion in the registry"),
    ("below the minimum", _results(a=0.97, b=0.96), None, [], metrics.DecisionRule(min_metric=0.98),
     "a", False, "is below the minimum 0.9800"),
    ("beats the champion", _results(a=0.99, b=0.97, champion=0.985), "champion", [],
     metrics.DecisionRule(min_metric=0.98, champion_min_delta=0.001), "a", True, "beats the champion"),
    ("worse than the champion", _results(a=0.99, b=0.97, champion=0.995), "champion", [],
     metrics.DecisionRule(min_metric=0.98), "a", False, "does not beat the champion"),
    ("champion never wins the bake-off", _results(a=0.985, b=0.99, champion=0.999), "champion", [],
     metrics.DecisionRule(min_metric=0.98), "b", False, "does not beat"),
    ("not significantly worse", _results(a=0.989, b=0.97, champion=0.99), "champion",
     _comparison("a", "champion", 0.40),
     metrics.DecisionRule(min_metric=0.98, champion_policy="not_significantly_worse"), "a", True,
     "not significantly worse"),
    ("significantly worse", _results(a=0.985, b=0.97, champion=0.99), "champion",
     _comparison("a", "champion", 0.01),
     metrics.DecisionRule(min_metric=0.98, champion_policy="not_significantly_worse"), "a", False,
     "is significantly worse"),
]


@pytest.mark.parametrize("case, results, champion, comparisons, rule, winner, blessed, phrase", DECISIONS,
                         ids=[d[0] for d in DECISIONS])
def test_decision_rule(case, results, champion, comparisons, rule, winner, blessed, phrase):
    d = metrics.decide(results, rule, champion, comparisons)
    assert (d["winner"], d["blessed"]) == (winner, blessed), d["reasons"]
    assert any(phrase in r for r in d["reasons"]), d["reasons"]
    assert d["reasons"][-1] == f"decision: {winner} is {'blessed' if blessed else 'NOT blessed'}"


def test_tie_goes_to_the_lower_log_loss():
    results = {"keras_model": {"accuracy": 0.98, "log_loss": 0.07},
               "pytorch_model": {"accuracy": 0.98, "log_loss": 0.05}}
    d = metrics.decide(results, metrics.DecisionRule(min_metric=0.97))
    assert d["winner"] == "pytorch_model" and d["blessed"] and "ties" in d["reasons"][0]


def test_metrics_equal_scikit_learn_on_fixed_predictions():
    from sklearn import metrics as skm

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 500)
    probs = rng.dirichlet(np.ones(10), 500)
    probs[np.arange(400), labels[:400]] += 2.0
    probs /= probs.sum(axis=1, keepdims=True)
    m = metrics.score(labels, probs)
    predicted = probs.argmax(1)
    assert m["accuracy"] == skm.accuracy_score(labels, predicted)
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=list(range(10))), rel=1e-6)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, predicted).tolist()
    p, r, f, _ = skm.precision_recall_fscore_support(labels, predicted)
    for d in range(10):
        assert (m["per_class"][str(d)]["precision"], m["per_class"][str(d)]["recall"]) == (p[d], r[d])


def test_invalid_rules_are_refused():
    with pytest.raises(ValueError, match="primary_metric"):
        metrics.DecisionRule(primary_metric="loss")
    with pytest.raises(ValueError, match="champion_policy"):
        metrics.DecisionRule(champion_policy="always")
