"""`python -m pipelines run --tune-trials N` end to end under LocalDagRunner on a real MNIST subset:
both frameworks tuned with the same budget, each Trainer trained with its study's best values, the
report showing both searches and whether tuning changed the verdict, the tuned values on the
registered version, the studies in MLflow; a rerun takes the tuners from the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
from ml_metadata.proto import metadata_store_pb2

from components.registry import MlflowRegistry
from components.tuner import study as study_lib
from conftest import bakeoff_runs
from pipelines import cli
from pipelines.config import load_config
from pipelines.summary import open_store

Execution = metadata_store_pb2.Execution
NAME = "mnist-tuned"
TUNING = ["--tune-trials", "3", "--tune-epochs", "2", "--tune-examples", "400"]


def run(root: Path, mnist_dir: Path, capsys, *flags: str) -> dict:
    code = cli.main(["run", "--json", "--output-root", str(root / "out"), "--source", str(mnist_dir),
                     "--cache-dir", str(root / "cache"), "--min-metric", "0.5", "--registered-model-name", NAME,
                     "--train-limit", "2500", "--eval-ratio", "0.2", "--test-limit", "1000", "--epochs", "1",
                     "--model", "seed_cnn", "--batch-size", "32", "--learning-rate", "0.001", "--lr-schedule",
                     "constant", "--beam-direct-running-mode", "in_memory", *TUNING, *flags], environ={})
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    return json.loads(out[out.index("{"):])


def test_run_with_tuning_trains_each_framework_with_its_best_values(mnist_dir, tmp_path, capsys):
    root = tmp_path
    summary = run(root, mnist_dir, capsys)
    assert {"keras_tuner", "pytorch_tuner", "keras_trainer", "pytorch_trainer"} <= set(summary["stage_seconds"])
    with open(summary["evaluation"]) as f:
        evaluation = json.load(f)
    studies = evaluation["tuning"]["frameworks"]
    assert set(studies) == {"keras", "pytorch"}
    assert studies["keras"]["budget"] == studies["pytorch"]["budget"] == {
        "trials": 3, "epochs": 2, "examples": 400, "total": 2400}
    assert studies["keras"]["space"] == studies["pytorch"]["space"]
    for framework, study in studies.items():
        assert study["spent"] == 2400 and study["baseline"]["number"] == 0
        trained = evaluation["candidates"][f"{framework}_model"]
        with open(os.path.join(trained["uri"], "model_meta.json")) as f:
            config = json.load(f)["config"]
        assert {k: config[k] for k in study["best"]["params"]} == study["best"]["params"], framework
        assert config["epochs"] == 1  # what was not tuned: the run's own settings
    verdict = evaluation["tuning"]["verdict"]
    assert verdict["final_winner"] == evaluation["candidates"][evaluation["decision"]["winner"]]["framework"]
    assert isinstance(verdict["changed"], bool) and "the verdict" in verdict["statement"]

    report = Path(summary["report"]).read_text()
    assert 'id="tuning-verdict"' in report and verdict["statement"] in report
    for image in ("tuning-history", "tuning-parameters"):
        assert 'src="data:image/png;base64,' in report.split(f'<img id="{image}"')[1][:200], image

    # The registered version says which values it was trained with and where they came from.
    cfg = load_config(output_root=str(root / "out"), registered_model_name=NAME)
    registry = MlflowRegistry(cfg.resolved_registry_uri(), NAME)
    tags = registry.version(summary["registered_version"]).tags
    winner = verdict["final_winner"]
    assert json.loads(tags["tuned_hyperparameters"]) == studies[winner]["best"]["params"]
    assert tags["tuning_study"] == studies[winner]["study"]
    assert tags["tuning_changed_verdict"] == str(verdict["changed"]).lower()

    # Each study is a tuning run in the bake-off's experiment, a nested run per trial.
    runs = bakeoff_runs(cfg.resolved_registry_uri(), NAME)
    for framework, study in studies.items():
        parent = runs[f"tuning {framework}"]
        children = [r for name, r in runs.items() if name.startswith(f"{framework} trial ")]
        assert len(children) == len(study["trials"])
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}

    # The rerun: same data and space, the tuners taken from the cache, their studies untouched.
    storage = study_lib.open_storage(cfg.resolved_tune_storage_uri(), 30)
    before = {s["study"]: len(optuna.load_study(study_name=s["study"], storage=storage).trials)
              for s in studies.values()}
    again = run(root, mnist_dir, capsys)
    store = open_store(cfg)
    run_context = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    tuner_states = {}
    for execution in store.get_executions_by_context(run_context.id):
        node = next(c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node")
        if node.endswith("_tuner"):
            tuner_states[node.rsplit(".", 1)[-1]] = execution.last_known_state
    assert tuner_states == {"keras_tuner": Execution.CACHED, "pytorch_tuner": Execution.CACHED}
    assert {s: len(optuna.load_study(study_name=s, storage=storage).trials) for s in before} == before
    assert again["winner"] == summary["winner"]
