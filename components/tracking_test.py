"""The bake-off's MLflow runs, written by the real evaluator and linked by the real pusher, in a
real (temporary, SQLite) store; tests/test_registry.py does the same against MLflow servers."""

from __future__ import annotations

import json

from components import registry, tracking
from components.registry_pusher.executor_test import MODEL_NAME, run_pusher
from conftest import bakeoff_runs, run_evaluator


def test_trainings_and_evaluation_are_tracked_and_the_version_links_to_them(small_examples, small_models,
                                                                            tmp_path):
    uri = registry.embedded_uri(str(tmp_path / "registry"))
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0,
                                         registry_uri=uri, model_name=MODEL_NAME, pipeline_run_id="run-1")
    runs = bakeoff_runs(uri, MODEL_NAME)
    assert sorted(runs) == ["bakeoff", "keras_model", "pytorch_model"]
    assert all(r.info.status == "FINISHED" and r.data.tags[tracking.PIPELINE_RUN_TAG] == "run-1"
               for r in runs.values())
    client = registry.MlflowRegistry(uri, MODEL_NAME).client
    for name in small_models:
        run, candidate = runs[name], evaluation["candidates"][name]
        meta = json.loads((small_models[name] / "Format-Serving" / "model_meta.json").read_text())
        assert run.data.params["framework"] == candidate["framework"]
        assert run.data.params["device"] == "cpu" and run.data.params["epochs"] == "1"
        assert run.data.params["batch_size"] == str(meta["config"]["batch_size"])
        # One value per epoch, at the step of its epoch, from the trainer's own history.
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            steps = client.get_metric_history(run.info.run_id, key)
            assert [(m.step, m.value) for m in steps] == [(1, candidate["training"]["history"][key][0])]
        assert run.data.metrics["test_accuracy"] == candidate["metrics"]["accuracy"]
        assert run.data.metrics["examples_per_second"] > 0 and run.data.metrics["train_seconds"] > 0
        assert run.info.start_time == int(meta["started_at"] * 1000)
        logs = [f.path for f in client.list_artifacts(run.info.run_id, "tensorboard")]
        assert logs, f"{name}: no TensorBoard logs in its run"
        assert runs["bakeoff"].data.tags[f"{tracking.TRAINING_RUN_TAG}.{name}"] == run.info.run_id
        assert runs["bakeoff"].data.metrics[f"{name}.accuracy"] == candidate["metrics"]["accuracy"]
    bakeoff = runs["bakeoff"]
    assert bakeoff.data.tags["winner"] == evaluation["decision"]["winner"]
    assert {f.path for f in client.list_artifacts(bakeoff.info.run_id)} >= {"report.html", "evaluation.json"}
    assert evaluation["tracking"]["evaluation_run_id"] == bakeoff.info.run_id

    run_pusher(tmp_path, tmp_path / "evaluation", blessing, small_models, uri)
    champion = registry.MlflowRegistry(uri, MODEL_NAME).champion()
    winner = evaluation["decision"]["winner"]
    assert champion.tags[tracking.EVALUATION_RUN_TAG] == bakeoff.info.run_id
    assert champion.tags[tracking.TRAINING_RUN_TAG] == runs[winner].info.run_id
    description = client.get_model_version(MODEL_NAME, champion.version).description
    assert tracking.run_link(bakeoff.info.experiment_id, runs[winner].info.run_id) in description

    # A model from the cache keeps its training run: evaluating it again adds an evaluation only.
    (tmp_path / "again").mkdir()
    again, _ = run_evaluator(small_examples, small_models, tmp_path / "again", min_accuracy=0.0,
                             registry_uri=uri, model_name=MODEL_NAME, pipeline_run_id="run-2")
    assert again["tracking"]["training_run_ids"] == evaluation["tracking"]["training_run_ids"]
    assert len(client.search_runs([bakeoff.info.experiment_id], "tags.kind = 'evaluation'")) == 2


def test_epoch_metrics_are_stamped_when_each_epoch_ended():
    history = {"loss": [0.5, 0.25], "val_accuracy": [0.9, 0.95]}
    stamped = tracking.epoch_metrics(history, started_at=1000.0, epoch_seconds=[2.0, 3.5])
    assert stamped == [("loss", 0.5, 1_002_000, 1), ("loss", 0.25, 1_005_500, 2),
                       ("val_accuracy", 0.9, 1_002_000, 1), ("val_accuracy", 0.95, 1_005_500, 2)]
