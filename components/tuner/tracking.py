"""A study in MLflow, beside the bake-off's runs (experiment `<registered model>-bakeoff`): one
tuning run per study, and each trial a run nested under it (tag mlflow.parentRunId) with its values
as params, its per-epoch eval accuracy as a curve, and how it ended (state, pruned).

Written by the study's first task once its trials are all over, from the study itself: idempotent
(a run per study and per trial number, found by tags), so a resumed or reused study adds only
the trials it has not logged yet.
"""

from __future__ import annotations

import json
import time
from typing import Any

from components import tracking
from components.registry import MlflowRegistry

STUDY_TAG = "tuning_study"
TRIAL_TAG = "tuning_trial"
PARENT_TAG = "mlflow.parentRunId"


def _find(client, experiment_id: str, filter_string: str) -> dict[str, str]:
    runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=5000)
    return {run.data.tags.get(TRIAL_TAG, ""): run.info.run_id for run in runs}


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None


def study_run(client, experiment_id: str, record: dict[str, Any], pipeline_run_id: str) -> str:
    """The study's tuning run (the one it already has, or a new one)."""
    from mlflow.entities import Param

    found = _find(client, experiment_id, f"tags.{STUDY_TAG} = '{record['study']}' and tags.kind = 'tuning'")
    if found:
        return next(iter(found.values()))
    run = client.create_run(experiment_id, run_name=f"tuning {record['framework']}", tags={
        STUDY_TAG: record["study"], "kind": "tuning", "framework": record["framework"],
        tracking.PIPELINE_RUN_TAG: pipeline_run_id, "storage": record["storage"],
        "mlflow.note.content": f"Optuna study `{record['study']}`: {record['sampler']}, pruner {record['pruner']}; "
                               f"budget {record['budget']['total']} training examples "
                               f"({record['budget']['trials']} trials x {record['budget']['epochs']} epochs x "
                               f"{record['budget']['examples']} examples); objective {record['objective']}"})
    params = {**{f"budget.{k}": v for k, v in record["budget"].items()}, "pruner": record["pruner"],
              "sampler": record["sampler"], **{f"space.{d['name']}": json.dumps(d) for d in record["space"]}}
    client.log_batch(run.info.run_id, params=[Param(k, tracking.fit_tag(str(v))) for k, v in params.items()])
    return run.info.run_id


def log_trial(client, experiment_id: str, parent: str, record: dict[str, Any], trial: dict[str, Any]) -> str:
    from mlflow.entities import Metric, Param

    started = trial["started"]
    run = client.create_run(experiment_id, run_name=f"{record['framework']} trial {trial['number']}",
                            start_time=_ms(started), tags={
                                PARENT_TAG: parent, STUDY_TAG: record["study"], TRIAL_TAG: str(trial["number"]),
                                "kind": "tuning_trial", "framework": record["framework"], "state": trial["state"],
                                "pruned": str(trial["state"] == "PRUNED").lower(),
                                "baseline": str(trial["baseline"]).lower(),
                                **({"error": tracking.fit_tag(trial["error"])} if trial["error"] else {})})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(f"epoch_{key}", float(value), now, epoch)
               for key, values in trial["history"].items() for epoch, value in enumerate(values, start=1)]
    # The curve as the pruner saw it (also for a failed trial, which has no history).
    metrics += [Metric("eval_accuracy", float(v), now, epoch) for epoch, v in enumerate(trial["curve"], start=1)]
    finals = {"objective": trial["value"], "used_examples": trial["used"], "epochs_run": trial["epochs_run"]}
    metrics += [Metric(k, float(v), now, 0) for k, v in finals.items() if v is not None]
    params = [Param(k, str(v)) for k, v in trial["params"].items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}.get(trial["state"], "FAILED")
    client.set_terminated(run_id, status=status,
                          end_time=_ms(started + trial["seconds"]) if started and trial["seconds"] else None)
    return run_id


def log_study(registry_uri: str, model_name: str, record: dict[str, Any], pipeline_run_id: str) -> dict[str, Any]:
    """The study's tuning run and a nested run for every trial that has ended; the tuning record's
    `tracking` entry."""
    from mlflow.entities import Metric

    registry = MlflowRegistry(registry_uri, model_name)
    client, experiment_id = registry.client, registry.experiment_id(tracking.EXPERIMENT_SUFFIX)
    parent = study_run(client, experiment_id, record, pipeline_run_id)
    logged = _find(client, experiment_id, f"tags.{STUDY_TAG} = '{record['study']}' and tags.kind = 'tuning_trial'")
    trial_runs = {}
    for trial in record["trials"]:
        if trial["state"] in ("RUNNING", "WAITING"):
            continue
        trial_runs[trial["number"]] = logged.get(str(trial["number"])) or log_trial(
            client, experiment_id, parent, record, trial)
    now = int(time.time() * 1000)
    finals = {"best_value": record["best"]["value"], "spent_examples": record["spent"],
              "budget_examples": record["budget"]["total"], "execution_seconds": record["execution_seconds"],
              "trial_seconds": record["trial_seconds"],
              **{f"trials_{state.lower()}": n for state, n in record["counts"].items()}}
    client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in finals.items()])
    client.set_tag(parent, "best_trial", str(record["best"]["number"]))
    client.set_terminated(parent)
    return {"experiment_id": experiment_id, "tuning_run_id": parent, "trial_run_ids": trial_runs,
            "tracking_uri": registry.uri}
