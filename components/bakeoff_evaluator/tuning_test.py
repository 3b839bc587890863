"""The evaluator's reading of the tuners' records: the verdict between the frameworks before tuning
(their untuned trials) against the bake-off's, forced each way; studies kept without trial histories."""

from __future__ import annotations

import pytest

from components.bakeoff_evaluator import executor, report


def study(framework: str, untuned: float | None, best: float) -> dict:
    trials = [{"number": 0, "state": "COMPLETE" if untuned is not None else "FAIL", "value": untuned,
               "params": {"width": 1.0}, "curve": [untuned] if untuned is not None else [], "history": {"x": [1]},
               "baseline": True, "epochs": 1, "epochs_run": 1, "used": 10, "seconds": 1.0, "error": "", "worker": "w"},
              {"number": 1, "state": "COMPLETE", "value": best, "params": {"width": 1.5}, "curve": [best],
               "history": {}, "baseline": False, "epochs": 1, "epochs_run": 1, "used": 10, "seconds": 1.0,
               "error": "", "worker": "w"}]
    return {"framework": framework, "study": f"s-{framework}", "identity": {"big": "x"}, "trials": trials,
            "best": {"number": 1, "value": best, "params": {"width": 1.5}},
            "baseline": {"number": 0, "value": untuned, "state": trials[0]["state"], "params": {"width": 1.0}},
            "budget": {"trials": 2, "epochs": 1, "examples": 10, "total": 20}, "spent": 20, "workers": 1,
            "counts": {"COMPLETE": 2, "PRUNED": 0, "FAIL": 0, "RUNNING": 0}, "execution_seconds": 2.0,
            "reused": False, "pruner": "median", "objective": "val_accuracy", "space": [
                {"name": "width", "choices": [1.0, 1.5]}]}


CANDIDATES = {"keras_model": {"framework": "keras"}, "pytorch_model": {"framework": "pytorch"}}


@pytest.mark.parametrize("untuned, winner, changed", [
    ((0.95, 0.90), "keras_model", False),  # keras led untuned and wins tuned
    ((0.95, 0.90), "pytorch_model", True),  # keras led untuned, pytorch wins tuned
    ((None, 0.90), "keras_model", None),  # an untuned trial did not finish: nothing to compare
])
def test_the_verdict_before_and_after_tuning(untuned, winner, changed):
    records = {"keras": study("keras", untuned[0], 0.97), "pytorch": study("pytorch", untuned[1], 0.98)}
    summary = executor.tuning_summary(records, CANDIDATES, {"winner": winner, "statistical_tie": False})
    verdict = summary["verdict"]
    assert verdict["changed"] is changed and verdict["final_winner"] == CANDIDATES[winner]["framework"]
    assert verdict["tuned_leader"] == "pytorch"
    assert ("CHANGED" in verdict["statement"]) == bool(changed)
    kept = summary["frameworks"]["keras"]
    assert "identity" not in kept and all("history" not in t for t in kept["trials"])
    evaluation = {"tuning": summary}
    assert report.tuning_rows(evaluation)[1][0] == "keras"
    assert report.tuning_history(summary).startswith("data:image/png")
    assert report.tuning_parameters(summary).startswith("data:image/png")
