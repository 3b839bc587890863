"""The multi-worker trainer's job manifests (a Trainer v2 TrainJob for PyTorch, a v1 TFJob for Keras)
and the replicas' environment, built for real; creating and waiting for the jobs runs against a fake
Kubernetes API in tests/test_cluster_api.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tfx.types import standard_artifacts

from components.training_job import executor, job, replica
from trainers import distributed

SETTINGS = job.JobSettings(kind="TrainJob", replicas=3, image="ghcr.io/o/mnist-tfx:abc", namespace="ml",
                           resources={"limits": {"nvidia.com/gpu": "1"}},
                           node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                           secret_env="mnist-s3", service_account="pipeline-runner", runtime="torch-distributed")


def _command():
    examples, model = standard_artifacts.Examples(), standard_artifacts.Model()
    examples.uri, model.uri = "s3://b/examples/1", "s3://b/model/7"
    properties = {"run_fn": "trainers.torch_trainer.run_fn", "custom_config": json.dumps({"epochs": 2})}
    return executor.replica_command({"examples": [examples]}, {"model": [model]}, properties), properties


def test_the_replica_command_runs_the_trainer_executor():
    command, properties = _command()
    assert command[:6] == ["python", "-m", "pipelines", "replica", "--executor_class_path",
                           "components.training_job.replica.ReplicaExecutor"]
    assert json.loads(command[command.index("--exec-properties") + 1]) == properties
    assert "s3://b/model/7" in command[command.index("--outputs") + 1]


def test_the_train_job_runs_n_nodes_of_the_trainer_executor_on_the_runtime():
    command, _ = _command()
    manifest = job.render(SETTINGS, "pytorch-trainer-1a2b", "ml", command, labels={"mnist-bakeoff/trainer": "t"})
    assert (manifest["apiVersion"], manifest["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert manifest["metadata"]["labels"] == {"app.kubernetes.io/part-of": "mnist-bakeoff",
                                              "mnist-bakeoff/trainer": "t"}
    spec = manifest["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    assert spec["activeDeadlineSeconds"] == job.ACTIVE_DEADLINE_SECONDS
    assert spec["trainer"] == {
        "image": SETTINGS.image, "command": command, "numNodes": 3, "numProcPerNode": 1,
        "resourcesPerNode": SETTINGS.resources,
        "env": [{"name": key, "valueFrom": {"secretKeyRef": {"name": "mnist-s3", "key": key}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")]}
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "mnist-bakeoff/multi-worker-trainer"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"] == {"annotations": {"sidecar.istio.io/inject": "false"}}
    assert pod["spec"] == {"serviceAccountName": "pipeline-runner", "nodeSelector": SETTINGS.node_selector,
                           "tolerations": SETTINGS.tolerations}
    assert job.replica_images(manifest) == [SETTINGS.image]
    bare = job.render(job.JobSettings(kind="TrainJob", replicas=2, image="i:1", runtime="r"), "k", "ml", ["x"])
    assert "spec" not in bare["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]
    assert "env" not in bare["spec"]["trainer"] and "resourcesPerNode" not in bare["spec"]["trainer"]


def test_the_tf_job_runs_a_chief_and_workers_of_the_trainer_executor():
    command, _ = _command()
    settings = dataclasses.replace(SETTINGS, kind="TFJob", runtime="")
    manifest = job.render(settings, "keras-trainer-1a2b", "ml", command)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "TFJob")
    specs = manifest["spec"]["tfReplicaSpecs"]
    assert {name: spec["replicas"] for name, spec in specs.items()} == {"Chief": 1, "Worker": 2}
    for spec in specs.values():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "tensorflow" and container["image"] == SETTINGS.image
        assert container["command"] == command and container["resources"] == SETTINGS.resources
        assert container["envFrom"] == [{"secretRef": {"name": "mnist-s3"}}]
        assert pod["nodeSelector"] == SETTINGS.node_selector and pod["tolerations"] == SETTINGS.tolerations
        assert spec["restartPolicy"] == "Never"
        assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        assert pod["serviceAccountName"] == "pipeline-runner"
    assert manifest["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0,
                                             "activeDeadlineSeconds": job.ACTIVE_DEADLINE_SECONDS}
    assert job.replica_images(manifest) == [SETTINGS.image, SETTINGS.image]


def test_settings_and_state_are_checked():
    assert job.JobSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    with pytest.raises(ValueError, match="unknown keys \\['replica'\\]"):
        job.JobSettings.from_dict({**SETTINGS.to_dict(), "replica": 2})
    with pytest.raises(ValueError, match="needs 2 or more replicas, got 1"):
        job.JobSettings(kind="TFJob", replicas=1, image="i:1")
    with pytest.raises(ValueError, match="kind 'MPIJob' is not one of \\['TFJob', 'TrainJob'\\]"):
        job.JobSettings(kind="MPIJob", replicas=2, image="i:1")
    with pytest.raises(ValueError, match="PyTorchJob \\(the v1 training operator\\) is replaced by Kubeflow Trainer"):
        job.JobSettings(kind="PyTorchJob", replicas=2, image="i:1")
    with pytest.raises(ValueError, match="a TrainJob needs a runtime"):
        job.JobSettings(kind="TrainJob", replicas=2, image="i:1")
    with pytest.raises(ValueError, match="runtime 'torch-distributed' is for a TrainJob, not a TFJob"):
        job.JobSettings(kind="TFJob", replicas=2, image="i:1", runtime="torch-distributed")
    assert job.ending(job.TRAIN_JOB, {}) is None
    running = [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]
    assert job.ending(job.TF_JOB, {"status": {"conditions": running}}) is None
    assert job.true_conditions({"status": {"conditions": running}}) == ["Created", "Running"]
    done = [{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True", "reason": "TFJobSucceeded"}]
    assert job.ending(job.TF_JOB, {"status": {"conditions": done}}) == job.Ending("Succeeded", "TFJobSucceeded")
    assert job.ending(job.TRAIN_JOB, {"status": {"conditions": done}}) is None  # a TrainJob says Complete
    complete = [{"type": "Complete", "status": "True", "reason": "JobSetCompleted", "message": "jobset completed"}]
    assert job.ending(job.TRAIN_JOB, {"status": {"conditions": complete}}).succeeded
    failed = [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "ran past 86400 s"}]
    assert job.ending(job.TRAIN_JOB, {"status": {"conditions": failed}}).describe() == \
        "Failed (DeadlineExceeded: ran past 86400 s)"
    name = job.job_name("PyTorch_Trainer_seed1")
    assert name.startswith("pytorch-trainer-seed1-") and len(name) <= 63
    assert name != job.job_name("PyTorch_Trainer_seed1")
    assert job.job_name("1st").startswith("t-1st-")  # RFC 1035: a TrainJob's name starts with a letter


def test_trainer_v2_replicas_get_torch_distributed_variables_from_pet():
    """A TrainJob's torch runtime sets torchrun's PET_* variables; the replica runs no torchrun."""
    env = {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "2",
           "PET_MASTER_ADDR": "trainer-1a2b-node-0-0.trainer-1a2b", "PET_MASTER_PORT": "29500"}
    derived = replica.torch_environment(env)
    assert derived == {"MASTER_ADDR": "trainer-1a2b-node-0-0.trainer-1a2b", "MASTER_PORT": "29500",
                       "WORLD_SIZE": "3", "RANK": "2"}
    assert distributed.torch_world({**env, **derived}) == distributed.World(rank=2, size=3)
    assert not replica.is_chief({**env, **derived})
    chief = {**env, "PET_NODE_RANK": "0"}
    assert replica.is_chief({**chief, **replica.torch_environment(chief)})
    assert replica.torch_environment({**env, "PET_NNODES": "1"}) == {}
    with pytest.raises(ValueError, match="PET_NPROC_PER_NODE=8: a replica is one trainer process per node"):
        replica.torch_environment({**env, "PET_NPROC_PER_NODE": "8"})


def test_vertex_replicas_get_torch_distributed_variables_from_tf_config():
    """Vertex AI sets TF_CONFIG (and CLUSTER_SPEC) in each replica, not MASTER_ADDR/WORLD_SIZE/RANK."""
    tf_config = {"cluster": {"chief": ["cmle-training-workerpool0-ab-0:2222"],
                             "worker": ["cmle-training-workerpool1-ab-0:2222", "cmle-training-workerpool1-ab-1:2222"]},
                 "task": {"type": "worker", "index": 1}}
    env = {"TF_CONFIG": json.dumps(tf_config)}
    derived = replica.torch_environment(env)
    assert derived == {"MASTER_ADDR": "cmle-training-workerpool0-ab-0", "MASTER_PORT": "2222",
                       "WORLD_SIZE": "3", "RANK": "2"}
    assert distributed.torch_world({**env, **derived}) == distributed.World(rank=2, size=3)
    assert not replica.is_chief({**env, **derived})
    assert replica.torch_environment({**env, "WORLD_SIZE": "3"}) == {}  # torchrun set them already
    assert replica.torch_environment({}) == {}
    chief = {"TF_CONFIG": json.dumps({**tf_config, "task": {"type": "chief", "index": 0}})}
    assert replica.is_chief({**chief, **replica.torch_environment(chief)})


def test_a_worker_waits_for_the_chiefs_export(tmp_path):
    export = tmp_path / "Format-Serving"
    with pytest.raises(RuntimeError, match="the chief did not export"):
        replica.wait_for_export(str(export), timeout=0.2, poll=0.05)
    export.mkdir()
    replica.wait_for_export(str(export), timeout=0.2, poll=0.05)
