"""The real OptunaTuner executor on small real data: TFX's HyperParameters artifact (KerasTuner's
config, which the Trainer reads into fn_args.hyperparameters), the tuning record, the study in
MLflow as a tuning run with a nested run per trial; a rerun reuses the study and logs nothing twice."""

from __future__ import annotations

import json
import os

import keras_tuner
from tfx.types import standard_artifacts

from components import tracking as bakeoff_tracking
from components.registry import MlflowRegistry, embedded_uri
from components.tuner import executor, results, space
from components.tuner.study_test import BASE, properties
from components.tuner.tracking import PARENT_TAG, STUDY_TAG
from trainers.config import TrainConfig


def run_tuner(examples, props: dict, out) -> tuple[dict, dict]:
    best, found = standard_artifacts.HyperParameters(), standard_artifacts.TunerResults()
    best.uri, found.uri = str(out / "best"), str(out / "results")
    os.makedirs(best.uri, exist_ok=True)
    os.makedirs(found.uri, exist_ok=True)
    executor.Executor().Do({"examples": [examples]}, {"best_hyperparameters": [best], "tuner_results": [found]},
                           props)
    with open(os.path.join(best.uri, results.BEST_HYPERPARAMETERS_FILE)) as f:
        config = json.load(f)
    with open(os.path.join(found.uri, results.TUNING_FILE)) as f:
        return config, json.load(f)


def test_the_tuner_emits_tfx_hyperparameters_and_tracks_each_trial(small_examples, tmp_path):
    registry_uri = embedded_uri(str(tmp_path / "registry"))
    os.makedirs(tmp_path / "registry")
    props = {**properties(f"sqlite:///{tmp_path / 'tuning' / 'optuna.db'}", trials=3, epochs=1, examples=256),
             executor.REGISTRY_URI: registry_uri, executor.MODEL_NAME: "tuned"}
    config, record = run_tuner(small_examples, props, tmp_path / "first")

    # KerasTuner's own reader takes it; the trainers apply its values over their settings.
    assert keras_tuner.HyperParameters.from_config(config).values == record["best"]["params"]
    tuned = TrainConfig.from_custom_config(BASE.as_custom_config(), config)
    assert {name: getattr(tuned, name) for name in record["best"]["params"]} == record["best"]["params"]
    assert [d["name"] for d in record["space"]] == [d.name for d in space.from_json(props[executor.SPACE])]
    assert record["budget"] == {"trials": 3, "epochs": 1, "examples": 256, "total": 768} and record["spent"] == 768
    assert record["counts"]["COMPLETE"] == 3 and record["baseline"]["number"] == 0
    assert record["best"]["value"] == max(t["value"] for t in record["trials"])
    assert all(len(t["curve"]) == 1 and t["history"]["val_accuracy"] == t["curve"] for t in record["trials"])
    assert not record["reused"] and record["trials_run"] == 3

    registry = MlflowRegistry(registry_uri, "tuned")
    experiment = registry.experiment_id(bakeoff_tracking.EXPERIMENT_SUFFIX)
    runs = registry.client.search_runs([experiment], filter_string=f"tags.{STUDY_TAG} = '{record['study']}'")
    parent = [r for r in runs if r.data.tags["kind"] == "tuning"]
    children = [r for r in runs if r.data.tags["kind"] == "tuning_trial"]
    assert len(parent) == 1 and len(children) == 3
    assert {r.data.tags[PARENT_TAG] for r in children} == {parent[0].info.run_id}
    assert record["tracking"]["tuning_run_id"] == parent[0].info.run_id
    for child in children:
        trial = record["trials"][int(child.data.tags["tuning_trial"])]
        assert child.data.params == {k: str(v) for k, v in trial["params"].items()}
        assert child.data.tags["pruned"] == "false" and child.info.status == "FINISHED"
        curve = registry.client.get_metric_history(child.info.run_id, "eval_accuracy")
        assert [m.value for m in curve] == trial["curve"]
    assert parent[0].data.metrics["spent_examples"] == 768

    _, again = run_tuner(small_examples, props, tmp_path / "rerun")  # same data and space: reused
    assert again["reused"] and again["study"] == record["study"]
    assert again["best"] == record["best"]
    rerun_runs = registry.client.search_runs([experiment], filter_string=f"tags.{STUDY_TAG} = '{record['study']}'")
    assert len(rerun_runs) == 4  # nothing logged twice
