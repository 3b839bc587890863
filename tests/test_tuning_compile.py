"""The tuning step in the DAG and in the compiled package: off by default (the default DAG and
pipeline.yaml as they were), N parallel tuner tasks per framework fixed at compile time sharing
one study, and the pre-submit check that finds each way such a package goes wrong. The tuned
package launched task by task is in test_kubeflow.py (`launched`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.kubeflow import presubmit
from pipelines.kubeflow.compile import compile_kubeflow
from pipelines.kubeflow.package import Package
from pipelines.pipeline import create_pipeline, tuner_ids

ROOT = "gs://bucket/root"


def node_ids(cfg, **kwargs) -> set[str]:
    return {c.id for c in create_pipeline(cfg, registry_uri="sqlite:////tmp/r/mlflow.db", pipeline_root="/tmp/p",
                                          **kwargs).components}


def test_tuning_is_off_by_default_and_adds_one_tuner_per_framework():
    default = node_ids(load_config())
    assert not any("tuner" in node for node in default)
    tuned = node_ids(load_config(tune_trials=4, tune_workers=2))
    assert tuned - default == {"keras_tuner", "pytorch_tuner"}  # local: one step, two worker processes
    parallel = node_ids(load_config(tune_trials=4, tune_workers=2), parallel_tuner_tasks=True)
    assert parallel - default == {"keras_tuner_0", "keras_tuner_1", "pytorch_tuner_0", "pytorch_tuner_1"}


def test_the_settings_refuse_the_registry_database_as_study_storage():
    with pytest.raises(ValueError, match="kfp_tune_storage_uri .* is the registry's database"):
        load_config(kfp_tune_storage_uri="postgresql://optuna@mlflow-postgres.mlflow.svc.cluster.local:5432/mlflow")
    with pytest.raises(ValueError, match="tune_storage_uri .* carries a password"):
        load_config(tune_storage_uri="postgresql://optuna:secret@db:5432/optuna")
    with pytest.raises(ValueError, match="tune_workers 1..16"):
        load_config(tune_workers=0)


@pytest.fixture(scope="module")
def tuned_package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "pipeline.yaml"
    compile_kubeflow(load_config(tune_trials=6, tune_workers=3, kfp_pipeline_root=ROOT), str(out))
    return out


def test_the_package_runs_each_study_as_parallel_tasks(tuned_package):
    assert presubmit.presubmit_problems(tuned_package, "kubeflow") == []
    package = Package.read(tuned_package)
    found = presubmit.tuner_tasks(package)
    assert found == {f: list(enumerate(ids)) for f, ids in tuner_ids(load_config(tune_trials=6, tune_workers=3),
                                                                        parallel_tasks=True).items()}
    for framework, tasks in ((f, dict(t)) for f, t in found.items()):
        trainer = package.tasks[f"{framework}_trainer"]
        assert set(tasks.values()) <= set(trainer["dependentTasks"])
        assert trainer["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"] == {
            "producerTask": f"{framework}_tuner_0", "outputArtifactKey": "best_hyperparameters"}
        for task_id in tasks.values():  # on the trainers' accelerator, with the storage's password
            label = package.executor_label(task_id)
            assert package.executors[label]["container"]["resources"]["accelerator"]["type"] == "nvidia.com/gpu"
            secrets = package.kubernetes_executors[label]["secretAsEnv"]
            assert {"secretName": "mnist-tuning-storage", "keyToEnv": [
                {"secretKey": "PGPASSWORD", "envVar": "PGPASSWORD"}]} in secrets
            # The untuned settings are the trainers' run parameter, so a run that changes them tunes with them.
            assert package.tasks[task_id]["inputs"]["parameters"]["custom_config"] == {
                "componentInputParameter": "trainer_config"}


def _broken(package_path: Path, tmp_path: Path, change) -> list[str]:
    package = Package.read(package_path)
    change(package)
    package.path = str(tmp_path / "broken.yaml")
    package.write()
    return presubmit.tuning_problems(Package.read(package.path), "kubeflow")


def _constant(package: Package, task_id: str, name: str, value) -> None:
    package.tasks[task_id]["inputs"]["parameters"][name] = {"runtimeValue": {"constant": value}}


BROKEN = {
    "a task with another budget": (lambda p: _constant(p, "keras_tuner_2", "trials", 9), "differs from its study"),
    "two tasks with one index": (lambda p: _constant(p, "keras_tuner_2", "task_index", 1), "[0, 1, 1], not 0..2"),
    "a pod-local study": (lambda p: [_constant(p, f"pytorch_tuner_{i}", "storage_uri", "sqlite:////tmp/o.db")
                                     for i in range(3)], "each pod would have its own"),
    "the registry's database": (lambda p: [_constant(p, f"pytorch_tuner_{i}", "storage_uri",
                                                     "postgresql://x@mlflow-postgres.mlflow.svc.cluster.local:5432"
                                                     "/mlflow") for i in range(3)], "is the registry's database"),
    "a trainer that does not wait": (lambda p: p.tasks["keras_trainer"]["dependentTasks"].remove("keras_tuner_2"),
                                     "does not wait for the tuner tasks ['keras_tuner_2']"),
    "values from another task": (lambda p: p.tasks["keras_trainer"]["inputs"]["artifacts"]["hyperparameters"]
                                 ["taskOutputArtifact"].update(producerTask="keras_tuner_1"), "not from its study's"),
    "no password": (lambda p: p.kubernetes_executors[p.executor_label("keras_tuner_1")].pop("secretAsEnv"),
                    "keras_tuner_1 gets no PGPASSWORD"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_presubmit_finds_a_broken_tuning_step(tuned_package, tmp_path, case):
    change, expected = BROKEN[case]
    problems = _broken(tuned_package, tmp_path, change)
    assert any(expected in p for p in problems), problems
