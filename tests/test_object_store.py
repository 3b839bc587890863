"""S3 as the artifact store, for real: a LocalDagRunner run whose pipeline root is a bucket of a
SeaweedFS S3 endpoint and whose registry is the MLflow server backed by PostgreSQL with its
artifacts in the same bucket (conftest.deployed_services); nothing but scratch on local disk.
The compiled package on the same store (KFP's minio:// URIs) is tests/test_kubeflow.py's launch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from components import object_store
from components.registry import MlflowRegistry
from conftest import FAST_TRAINING, load_champion_pyfunc, lock_settings, mnist_file
from pipelines import registry_commands
from pipelines.config import REPO_ROOT
from pipelines.kubeflow import entrypoint
from pipelines.pipeline import TRAINER_IDS

SUBSET = {"train_limit": 2500, "eval_ratio": 0.2, "test_limit": 1000, "epochs": 1, **FAST_TRAINING}
MODEL_NAME = "mnist-s3"


def test_tensorflow_io_and_mlflow_variables_come_from_the_aws_ones():
    derived = object_store.s3_environment({"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000"})
    assert derived == {"AWS_REGION": "us-east-1", "S3_ENDPOINT": "http://minio-service.kubeflow:9000",
                       "S3_USE_HTTPS": "0", "MLFLOW_S3_ENDPOINT_URL": "http://minio-service.kubeflow:9000",
                       "S3_DISABLE_MULTI_PART_DOWNLOAD": "1"}
    # AWS itself: no endpoint; what the user set wins.
    assert object_store.s3_environment({"AWS_REGION": "eu-west-1"}) == {"S3_DISABLE_MULTI_PART_DOWNLOAD": "1"}
    assert object_store.s3_environment({"AWS_ENDPOINT_URL": "https://s3.example", "S3_USE_HTTPS": "1",
                                        "MLFLOW_S3_ENDPOINT_URL": "x"})["S3_ENDPOINT"] == "https://s3.example"


def test_kfp_minio_uris_reach_the_executor_as_s3_and_go_back_as_minio(tmp_path):
    invocation = {"inputs": {"artifacts": {"examples": {"artifacts": [{"uri": "minio://mlpipeline/v2/a/examples"}]}}},
                  "outputs": {"outputFile": str(tmp_path / "out.json")}}
    assert json.loads(object_store.executor_input_to_s3(json.dumps(invocation)))["inputs"]["artifacts"][
        "examples"]["artifacts"][0]["uri"] == "s3://mlpipeline/v2/a/examples"
    (tmp_path / "out.json").write_text(json.dumps({"artifacts": {"model": {"artifacts": [
        {"uri": "s3://mlpipeline/v2/a/model", "metadata": {}}]}}}))
    entrypoint.back_to_minio(str(tmp_path / "out.json"))
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["artifacts"]["model"]["artifacts"][0]["uri"] == "minio://mlpipeline/v2/a/model"


def test_executor_command_without_the_invocation_is_a_clear_error(capsys):
    assert entrypoint.run_executor(["--executor_class_path", "x.Executor"], {}) == 2
    assert "--json_serialized_invocation_args" in capsys.readouterr().err


def test_seaweedfs_does_not_start_on_a_disk_without_room(tmp_path):
    """Short of room weed turns every volume read-only, and each S3 write fails with "InternalError"
    (one CI run spent an hour on that): it is refused before it starts, in one line naming the folder."""
    from infra import services

    free_gib = shutil.disk_usage(tmp_path).free / 2**30
    services.refuse_a_full_disk(tmp_path, "SeaweedFS", needs_gib=free_gib / 2)  # room: no error
    with pytest.raises(services.ServiceError) as refused, \
            services.seaweedfs(tmp_path / "s3", needs_free_gib=free_gib + 1024):
        pass
    assert str(refused.value).startswith(f"SeaweedFS at {tmp_path / 's3'}: ")
    assert "GiB free on its disk, it needs" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "s3" / "weed.log").exists()  # weed never started


@pytest.fixture(scope="module")
def s3_run(deployed_services, mnist_dir, tmp_path_factory):
    """`python -m pipelines run` with its artifacts on the bucket and the PostgreSQL-backed registry."""
    store, registry_uri, database = deployed_services
    lock_uri, password = lock_settings(database)
    root = tmp_path_factory.mktemp("s3-run")
    artifact_root = f"s3://{store.bucket}/local-run"
    flags = {"output_root": root / "out", "artifact_root": artifact_root, "registry_uri": registry_uri,
             "registry_lock_uri": lock_uri,
             "source": mnist_dir, "cache_dir": root / "scratch-cache", "min_metric": 0.5,
             "registered_model_name": MODEL_NAME, "beam_direct_running_mode": "in_memory", **SUBSET}
    argv = [sys.executable, "-m", "pipelines", "run", "--json"]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "MLFLOW_"))}
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**env, **store.environment, **password, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-5000:]
    return store, registry_uri, root, json.loads(done.stdout[done.stdout.index("{"):])


def test_every_artifact_is_on_the_bucket_and_only_metadata_on_disk(s3_run):
    store, _, root, summary = s3_run
    assert summary["artifacts"] == f"s3://{store.bucket}/local-run"
    stages = {key.split("/")[1] for key in store.keys("local-run/")}
    assert stages >= {"ChampionResolver", "MnistExampleGen", "StatisticsGen", "ExampleValidator", "DriftValidator",
                      *TRAINER_IDS, "BakeoffEvaluator", "RegistryPusher"}  # DataGate writes nothing
    for trainer in TRAINER_IDS:  # the exported models themselves, not only folders
        assert any(key.endswith(("saved_model.pb", "state_dict.pt")) for key in store.keys(f"local-run/{trainer}/"))
    on_disk = sorted(str(p.relative_to(root / "out")) for p in (root / "out").rglob("*") if p.is_file())
    logs = [p for p in on_disk if p.startswith("logs/run-") and p.endswith(".log")]  # the run's log stays local
    assert len(logs) == 1 and sorted(set(on_disk) - set(logs)) == [".run.lock", "metadata.sqlite"], on_disk


def test_winner_is_registered_on_postgres_with_its_files_on_the_bucket(s3_run, mnist_dir):
    store, registry_uri, _, summary = s3_run
    registry = MlflowRegistry(registry_uri, MODEL_NAME)
    assert [v.version for v in registry.versions()] == ["1"] == [summary["registered_version"]]
    assert registry.champion().version == "1"
    assert any(key.endswith("MLmodel") for key in store.keys("mlflow/"))

    # The champion, loaded by alias through the server, scores what the evaluator recorded on
    # the same test images (the first test_limit records of the test file).
    images = registry_commands.load_idx_records(str(mnist_file(mnist_dir, "t10k-images-idx3-ubyte")), "images", 0,
                                                SUBSET["test_limit"])
    labels = registry_commands.load_idx_records(str(mnist_file(mnist_dir, "t10k-labels-idx1-ubyte")), "labels", 0,
                                                SUBSET["test_limit"])
    predictions = np.asarray(load_champion_pyfunc(registry).predict(images))
    assert float((predictions.argmax(1) == labels).mean()) == summary["accuracy"][summary["winner"]]
    evaluation = json.loads(store.client().get_object(
        Bucket=store.bucket, Key=summary["evaluation"].split("/", 3)[3])["Body"].read())
    assert evaluation["decision"]["winner"] == summary["winner"]
