"""The multi-worker trainer's job manifest and replica environment, built for real (no Kubernetes API
exists here: creating the job and the operator running it are for a cluster)."""

from __future__ import annotations

import json

import pytest
from tfx.types import standard_artifacts

from components.training_job import executor, job, replica
from trainers import distributed

SETTINGS = job.JobSettings(kind="PyTorchJob", replicas=3, image="ghcr.io/o/mnist-tfx:abc", namespace="ml",
                           resources={"limits": {"nvidia.com/gpu": "1"}},
                           node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                           secret_env="mnist-s3", service_account="pipeline-runner")


def test_the_job_runs_the_trainer_executor_on_a_chief_and_workers(tmp_path):
    examples, model = standard_artifacts.Examples(), standard_artifacts.Model()
    examples.uri, model.uri = "s3://b/examples/1", "s3://b/model/7"
    properties = {"run_fn": "trainers.torch_trainer.run_fn", "custom_config": json.dumps({"epochs": 2})}
    command = executor.replica_command({"examples": [examples]}, {"model": [model]}, properties)
    assert command[:6] == ["python", "-m", "pipelines", "replica", "--executor_class_path",
                           "components.training_job.replica.ReplicaExecutor"]
    assert json.loads(command[command.index("--exec-properties") + 1]) == properties
    assert "s3://b/model/7" in command[command.index("--outputs") + 1]

    manifest = job.render(SETTINGS, "pytorch-trainer-1a2b", "ml", command, labels={"mnist-bakeoff/trainer": "t"})
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    assert {name: spec["replicas"] for name, spec in specs.items()} == {"Master": 1, "Worker": 2}
    for spec in specs.values():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch" and container["image"] == SETTINGS.image
        assert container["command"] == command and container["resources"] == SETTINGS.resources
        assert container["envFrom"] == [{"secretRef": {"name": "mnist-s3"}}]
        assert pod["nodeSelector"] == SETTINGS.node_selector and pod["tolerations"] == SETTINGS.tolerations
        assert spec["restartPolicy"] == "Never"
        assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        assert pod["serviceAccountName"] == "pipeline-runner"
    assert manifest["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0,
                                             "activeDeadlineSeconds": job.ACTIVE_DEADLINE_SECONDS}
    tf_job = job.render(job.JobSettings(kind="TFJob", replicas=2, image="i:1"), "k", "ml", ["x"])
    assert set(tf_job["spec"]["tfReplicaSpecs"]) == {"Chief", "Worker"}
    assert tf_job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["name"] == "tensorflow"


def test_settings_and_state_are_checked():
    assert job.JobSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    with pytest.raises(ValueError, match="unknown keys \\['replica'\\]"):
        job.JobSettings.from_dict({**SETTINGS.to_dict(), "replica": 2})
    with pytest.raises(ValueError, match="needs 2 or more replicas, got 1"):
        job.JobSettings(kind="TFJob", replicas=1, image="i:1")
    with pytest.raises(ValueError, match="kind 'MPIJob' is not one of"):
        job.JobSettings(kind="MPIJob", replicas=2, image="i:1")
    assert job.job_state({}) is None
    assert job.job_state({"status": {"conditions": [{"type": "Created", "status": "True"},
                                                    {"type": "Running", "status": "True"}]}}) is None
    assert job.job_state({"status": {"conditions": [{"type": "Running", "status": "False"},
                                                    {"type": "Succeeded", "status": "True"}]}}) == "Succeeded"
    name = job.job_name("PyTorch_Trainer_seed1")
    assert name.startswith("pytorch-trainer-seed1-") and len(name) <= 63
    assert name != job.job_name("PyTorch_Trainer_seed1")


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
    assert replica.torch_environment({**env, "WORLD_SIZE": "3"}) == {}  # PyTorchJob set them already
    assert replica.torch_environment({}) == {}
    chief = {"TF_CONFIG": json.dumps({**tf_config, "task": {"type": "chief", "index": 0}})}
    assert replica.is_chief({**chief, **replica.torch_environment(chief)})


def test_a_worker_waits_for_the_chiefs_export(tmp_path):
    export = tmp_path / "Format-Serving"
    with pytest.raises(RuntimeError, match="the chief did not export"):
        replica.wait_for_export(str(export), timeout=0.2, poll=0.05)
    export.mkdir()
    replica.wait_for_export(str(export), timeout=0.2, poll=0.05)
