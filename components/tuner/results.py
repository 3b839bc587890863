"""What a study leaves for the Trainer and for people: the best values as KerasTuner's HyperParameters
config (the HyperParameters artifact), and the tuning record (the TunerResults artifact): budget
and what was spent, wall time, every trial with its values, per-epoch curve and how it ended, the
best trial and the untuned baseline trial.
"""

from __future__ import annotations

import json
import os
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from components.tuner import budget as budget_lib
from components.tuner import space as space_lib
from components.tuner import study as study_lib
from components.tuner.worker import OBJECTIVE, Plan

# The HyperParameters artifact's one file, as TFX's Tuner names it (its Trainer reads the only file there).
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.txt"
# The TunerResults artifact: TFX's Tuner's records (trial_id, score, values) and this tuner's record,
# which the BakeoffEvaluator reads by this name.
TFX_RESULTS_FILE = "tuner_results.json"
TUNING_FILE = "tuning.json"
FORMAT_VERSION = 1


class TuningFailed(RuntimeError):
    """No trial of the study finished: there are no tuned values to train with."""


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    curve = [t.intermediate_values[step] for step in sorted(t.intermediate_values)]
    return {
        "number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
        "epochs": t.user_attrs.get(budget_lib.EPOCHS), "epochs_run": t.user_attrs.get(budget_lib.EPOCHS_RUN, 0),
        "examples": t.user_attrs.get(budget_lib.EXAMPLES), "used": budget_lib.used(t), "curve": curve,
        "history": t.user_attrs.get("history", {}), "result": t.user_attrs.get("result", {}),
        "baseline": bool(t.user_attrs.get("baseline")), "worker": t.user_attrs.get(study_lib.WORKER, ""),
        "error": t.user_attrs.get(study_lib.ERROR, ""),
        "started": t.datetime_start.timestamp() if t.datetime_start else None,
        "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
        if t.datetime_start and t.datetime_complete else None,
    }


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        states = sorted({t.state.name for t in trials}) or ["no trials"]
        raise TuningFailed(f"no trial of the study finished ({', '.join(states)}): see the tuner's log for each "
                           "trial's error")
    return max(complete, key=lambda t: (t.value, -t.number))  # the earlier trial on a tie


def tuning_record(study: optuna.Study, plan: Plan, execution: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The study as the report and the registry read it."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    ran = [t for t in trials if t.datetime_start and t.datetime_start.timestamp() >= execution["started"]]
    counts = {state.name: sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    return {
        "version": FORMAT_VERSION, "framework": plan.framework, "study": plan.study_name,
        "storage": plan.storage_url, "identity": plan.identity,
        "space": json.loads(plan.space_json), "budget": plan.budget.to_dict(),
        "spent": budget_lib.spent(trials), "objective": f"{OBJECTIVE} of the trial's last epoch (eval split)",
        "sampler": f"TPE (seed {plan.seed}, multivariate, constant liar)", "pruner": plan.pruner,
        "workers": execution["workers"], "failed_workers": execution.get("failed_workers", []),
        # Trials this execution started: none when a rerun found the study done (its result reused).
        "trials_run": len(ran), "reused": not ran,
        "execution_seconds": round(seconds, 1),
        "trial_seconds": round(sum(r["seconds"] or 0.0 for r in map(trial_record, trials)), 1),
        "counts": counts,
        "best": {"number": best.number, "value": best.value, "params": dict(best.params)},
        "baseline": {"number": baseline.number, "value": baseline.value, "state": baseline.state.name,
                     "params": dict(baseline.params)} if baseline else None,
        "trials": [trial_record(t) for t in trials],
    }


def write_outputs(hyperparameters_dir: str, results_dir: str, record: dict[str, Any]) -> None:
    """The HyperParameters artifact (KerasTuner's config of the space, the best values chosen) and
    the TunerResults artifact (TFX's records and the tuning record)."""
    import tensorflow as tf

    space = space_lib.from_json(json.dumps(record["space"]))
    best = record["best"]["params"]
    files = {
        os.path.join(hyperparameters_dir, BEST_HYPERPARAMETERS_FILE):
            json.dumps(space_lib.hyperparameters_config(space, best)),
        os.path.join(results_dir, TFX_RESULTS_FILE): json.dumps(
            [{"trial_id": str(t["number"]), "score": t["value"], **t["params"]}
             for t in record["trials"] if t["state"] == "COMPLETE"]),
        os.path.join(results_dir, TUNING_FILE): json.dumps(record, indent=2, sort_keys=True, default=str),
    }
    for path, text in files.items():
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
