"""A multi-worker trainer's job on a cluster, executed against a fake Kubernetes API server
(tests/fake_kubernetes.py) through the real kubernetes client: the TrainJob (PyTorch) and TFJob
(Keras) are created, waited for until their operator marks them ended (both ways), refused
requests are named (404, 403, 409), and a wait that stops early deletes the job while one that
ended leaves it. The fake's operator is the test: it sets the job's conditions after N polls."""

from __future__ import annotations

import json
import signal
import threading

import pytest
from tfx.types import standard_artifacts

from components import cluster
from components.training_job import executor, job, submission
from pipelines.kubeflow import placement
from tests.fake_kubernetes import FakeKubernetes

TRAIN_JOBS = (job.TRAIN_JOB.group, job.TRAIN_JOB.version, job.TRAIN_JOB.plural)
TF_JOBS = (job.TF_JOB.group, job.TF_JOB.version, job.TF_JOB.plural)
IMAGE = "ghcr.io/o/mnist-tfx:abc"
SETTINGS = {
    "TrainJob": job.JobSettings(kind="TrainJob", replicas=3, image=IMAGE, namespace="ml", runtime="torch-distributed",
                                resources={"limits": {"nvidia.com/gpu": "1"}}, secret_env="mnist-s3",
                                node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                                service_account="pipeline-runner"),
    "TFJob": job.JobSettings(kind="TFJob", replicas=2, image=IMAGE, namespace="ml", secret_env="mnist-s3"),
}


class FastExecutor(executor.Executor):
    poll_seconds = 0.0


@pytest.fixture
def fake(tmp_path, monkeypatch):
    with FakeKubernetes([TRAIN_JOBS, TF_JOBS], namespaces=["ml"]) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        yield server


def _manifest(kind: str, name: str = "trainer-1a2b3c4d") -> dict:
    return job.render(SETTINGS[kind], name, "ml", ["python", "-m", "pipelines", "replica"])


def _run_trainer(kind: str) -> None:
    examples, model = standard_artifacts.Examples(), standard_artifacts.Model()
    examples.uri, model.uri = "s3://b/examples/1", "s3://b/model/7"
    run_fn = {"TrainJob": "trainers.torch_trainer.run_fn", "TFJob": "trainers.keras_trainer.run_fn"}[kind]
    properties = {"run_fn": run_fn, "custom_config": json.dumps({job.JOB_KEY: SETTINGS[kind].to_dict()})}
    FastExecutor().Do({"examples": [examples]}, {"model": [model]}, properties)


def _plural(kind: str) -> str:
    return job.KINDS[kind].plural


def test_a_pytorch_trainer_creates_a_train_job_and_waits_for_its_completion(fake):
    fake.after("GET", "trainjobs", 1, lambda f: f.set_conditions("trainjobs", ("Created", "JobSetCreated")))
    fake.after("GET", "trainjobs", 3, lambda f: f.set_conditions("trainjobs", ("Created", "JobSetCreated"),
                                                                 ("Complete", "JobSetCompleted")))
    _run_trainer("TrainJob")
    (created,) = fake.seen("POST")
    assert created.path == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"
    assert created.authorization == "Bearer fake-service-account-token"  # the kubeconfig's token travelled
    body = created.body
    assert (body["apiVersion"], body["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert body["metadata"]["name"].startswith("pytorch-trainer-")
    assert body["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                          "kind": "ClusterTrainingRuntime"}
    trainer = body["spec"]["trainer"]
    assert (trainer["image"], trainer["numNodes"], trainer["numProcPerNode"]) == (IMAGE, 3, 1)
    assert trainer["command"][:4] == ["python", "-m", "pipelines", "replica"]
    assert "s3://b/model/7" in trainer["command"][trainer["command"].index("--outputs") + 1]
    assert len(fake.seen("GET")) >= 3 and fake.seen("DELETE") == []  # ended: it stays, with its pods' logs
    assert job.ending(job.TRAIN_JOB, fake.only("trainjobs")).succeeded


def test_a_keras_trainer_whose_tf_job_failed_fails_naming_why(fake):
    fake.after("GET", "tfjobs", 2, lambda f: f.set_conditions("tfjobs", ("Created", "TFJobCreated"),
                                                              ("Failed", "TFJobFailed")))
    with pytest.raises(RuntimeError) as error:
        _run_trainer("TFJob")
    name = fake.only("tfjobs")["metadata"]["name"]
    assert name.startswith("keras-trainer-")
    assert str(error.value) == (f"TFJob ml/{name} ended Failed (TFJobFailed: Failed: TFJobFailed); its pods' logs "
                                f"say why (kubectl logs -n ml -l training.kubeflow.org/job-name={name})")
    assert fake.seen("POST")[0].path == "/apis/kubeflow.org/v1/namespaces/ml/tfjobs"
    assert fake.seen("DELETE") == []


def test_a_failed_train_job_points_at_its_jobset_pods(fake):
    fake.after("GET", "trainjobs", 1, lambda f: f.set_conditions("trainjobs", ("Failed", "DeadlineExceeded")))
    ending = submission.submit_and_wait(_manifest("TrainJob"), poll=0)
    assert ending == job.Ending("Failed", "DeadlineExceeded", "Failed: DeadlineExceeded")
    assert submission.JobRef.of(_manifest("TrainJob")).logs_hint() == \
        "kubectl logs -n ml -l jobset.sigs.k8s.io/jobset-name=trainer-1a2b3c4d"


@pytest.mark.parametrize("kind, expected", [
    ("TrainJob", "TrainJob ml/trainer-1a2b3c4d: the cluster has no trainer.kubeflow.org/v1alpha1 trainjobs: "
                 "Kubeflow Trainer v2 is not installed"),
    ("TFJob", "TFJob ml/trainer-1a2b3c4d: the cluster has no kubeflow.org/v1 tfjobs: the Kubeflow training operator "
              "v1 (release-1.9; Trainer v2 has no TensorFlow runtime) is not installed"),
])
def test_a_cluster_without_the_operator_is_named(tmp_path, kind, expected):
    with FakeKubernetes([], namespaces=["ml"]) as bare:
        with pytest.raises(RuntimeError) as error:
            submission.submit_and_wait(_manifest(kind), api=cluster.custom_objects_api("t", "t", bare.api_client()))
    assert str(error.value) == expected
    assert bare.seen("DELETE") == []


def test_a_missing_namespace_is_named(tmp_path):
    with FakeKubernetes([TRAIN_JOBS], namespaces=["other"]) as fake:
        with pytest.raises(RuntimeError) as error:
            submission.submit_and_wait(_manifest("TrainJob"),
                                       api=cluster.custom_objects_api("t", "t", fake.api_client()))
    assert str(error.value) == ("TrainJob ml/trainer-1a2b3c4d: namespace 'ml' does not exist "
                                "(kfp_training_job_namespace)")


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_a_forbidden_create_names_the_permission(fake, kind):
    fake.forbid("ml", "create")
    with pytest.raises(RuntimeError) as error:
        submission.submit_and_wait(_manifest(kind), poll=0)
    resource = job.KINDS[kind].resource
    assert str(error.value) == (f"{kind} ml/trainer-1a2b3c4d: this step's service account may not create {resource} "
                                "in namespace 'ml': grant it create, get and delete (a Role and RoleBinding)")
    assert fake.objects == {} and fake.seen("DELETE") == []


def test_a_forbidden_get_stops_the_wait_and_deletes_the_job(fake):
    fake.forbid("ml", "get")
    with pytest.raises(RuntimeError, match="may not get trainjobs.trainer.kubeflow.org in namespace 'ml'"):
        submission.submit_and_wait(_manifest("TrainJob"), poll=0)
    assert [r.name for r in fake.seen("DELETE")] == ["trainer-1a2b3c4d"] and fake.objects == {}


def test_a_missing_runtime_is_named_from_the_admission_webhook(fake):
    """Trainer's webhook refuses a TrainJob whose ClusterTrainingRuntime is missing (a 403 from admission,
    not RBAC)."""
    def trainer_webhook(train_job):
        name = train_job["spec"]["runtimeRef"]["name"]
        return (f'spec.RuntimeRef: Invalid value: clustertrainingruntimes.trainer.kubeflow.org "{name}" not found: '
                "specified clusterTrainingRuntime must be created before the TrainJob is created")
    fake.admission["trainjobs"] = trainer_webhook
    with pytest.raises(RuntimeError) as error:
        submission.submit_and_wait(_manifest("TrainJob"), poll=0)
    assert str(error.value).startswith("TrainJob ml/trainer-1a2b3c4d: the cluster's admission refused it: admission "
                                       'webhook "validator.trainjobs" denied the request: spec.RuntimeRef:')
    assert 'clustertrainingruntimes.trainer.kubeflow.org "torch-distributed" not found' in str(error.value)


def test_a_job_of_the_same_name_is_neither_adopted_nor_deleted(fake):
    theirs = _manifest("TFJob")
    fake.put(theirs)
    with pytest.raises(RuntimeError) as error:
        submission.submit_and_wait(_manifest("TFJob"), poll=0)
    assert str(error.value) == ("TFJob ml/trainer-1a2b3c4d exists already and is not this step's (each launch names "
                                "its job afresh): left as it is; delete it or rerun the step")
    assert fake.seen("GET") == [] and fake.seen("DELETE") == []
    assert fake.only("tfjobs") == theirs


def test_a_cancelled_wait_deletes_the_job(fake):
    """KFP cancels a step by deleting its pod: SIGTERM, here sent while the step polls its job."""
    main = threading.main_thread().ident
    fake.after("GET", "trainjobs", 2, lambda f: signal.pthread_kill(main, signal.SIGTERM))

    def not_ours(signum, frame):  # had the wait not taken SIGTERM over, the test fails instead of the process ending
        raise AssertionError("SIGTERM reached the test's handler, not the wait's")

    previous = signal.signal(signal.SIGTERM, not_ours)
    try:
        with pytest.raises(submission.StepCancelled):
            submission.submit_and_wait(_manifest("TrainJob"), poll=0)
        assert signal.getsignal(signal.SIGTERM) is not_ours  # the wait put the handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [(r.name, r.path) for r in fake.seen("DELETE")] == [
        ("trainer-1a2b3c4d", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs/trainer-1a2b3c4d")]
    assert fake.objects == {}


def test_a_job_deleted_by_someone_else_ends_the_wait(fake):
    fake.after("GET", "tfjobs", 1, lambda f: f.objects.clear())
    with pytest.raises(RuntimeError) as error:
        submission.submit_and_wait(_manifest("TFJob"), poll=0)
    assert str(error.value) == "TFJob ml/trainer-1a2b3c4d was deleted while this step waited for it"


def test_a_transient_api_error_is_asked_again_and_a_lasting_one_is_not(fake):
    fake.fail_next("GET", 503, times=2)
    fake.after("GET", "trainjobs", 3, lambda f: f.set_conditions("trainjobs", ("Complete", "JobSetCompleted")))
    assert submission.submit_and_wait(_manifest("TrainJob"), poll=0).succeeded
    assert fake.seen("DELETE") == []
    fake.objects.clear()
    fake.fail_next("GET", 503, times=submission.TRANSIENT_TRIES + 1)
    with pytest.raises(RuntimeError, match="TrainJob ml/trainer-1a2b3c4d: get refused: injected failure 503"):
        submission.submit_and_wait(_manifest("TrainJob"), poll=0)
    assert len(fake.seen("DELETE")) == 1


def test_fields_an_older_trainer_drops_fail_the_step_and_delete_the_job(fake):
    """Trainer before v2.2 prunes runtimePatches (unknown to its CRD): the pods would start unplaced."""
    def prune(train_job):
        train_job["spec"].pop("runtimePatches")
        train_job["spec"].pop("activeDeadlineSeconds")
    fake.admission["trainjobs"] = prune
    with pytest.raises(RuntimeError) as error:
        submission.submit_and_wait(_manifest("TrainJob"), poll=0)
    assert str(error.value) == ("TrainJob ml/trainer-1a2b3c4d: the cluster dropped spec.activeDeadlineSeconds, "
                                "spec.runtimePatches: its Kubeflow Trainer v2 is older than this manifest (TrainJob "
                                "needs Kubeflow Trainer >= v2.2); upgrade it")
    assert len(fake.seen("DELETE")) == 1 and fake.objects == {}


def test_without_a_cluster_or_with_a_broken_kubeconfig_the_step_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(cluster.NoClusterError, match="multi-worker trainer: no Kubernetes API in reach"):
        submission.submit_and_wait(_manifest("TFJob"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(cluster.NoClusterError, match="the kubeconfig \\$KUBECONFIG names .*missing.* is not usable"):
        submission.submit_and_wait(_manifest("TFJob"))


def test_the_train_job_secret_keys_are_the_steps():
    assert job.SECRET_KEYS == placement.OBJECT_STORE_KEYS
