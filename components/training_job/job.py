"""The Kubernetes job that runs a multi-worker trainer's N replicas of the same TFX Trainer executor,
rendered as the manifest the executor creates:

- PyTorch: a TrainJob of Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1) on a torch
  ClusterTrainingRuntime (`torch-distributed` by default): numNodes pods of the runtime's "node"
  container in a JobSet. The runtime gives each pod PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
  PET_MASTER_ADDR and PET_MASTER_PORT (torchrun's variables); the replica turns them into
  torch.distributed's (components/training_job/replica.py). The pods' placement, service account and
  annotations travel as the TrainJob's runtimePatches (Trainer >= v2.2).
- Keras: a TFJob of the Kubeflow training operator v1 (kubeflow.org/v1, its release-1.9): Trainer
  v2 has no TensorFlow runtime, and its master no longer has the v1 operator, so TFJob is the one
  way to start MultiWorkerMirroredStrategy's workers there. The operator sets TF_CONFIG ({"cluster":
  {"chief": [...], "worker": [...]}, "task": ...}) in each of its Chief and N-1 Workers.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from typing import Any


@dataclasses.dataclass(frozen=True)
class JobKind:
    name: str
    group: str
    version: str
    plural: str
    succeeded: str  # the condition type that says the job ended well ("Failed" says the opposite)
    pod_label: str  # the label its pods carry, valued with the job's name
    operator: str  # what runs it on the cluster, in the user's words

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}"


TRAIN_JOB = JobKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "Complete",
                    "jobset.sigs.k8s.io/jobset-name", "Kubeflow Trainer v2")
TF_JOB = JobKind("TFJob", "kubeflow.org", "v1", "tfjobs", "Succeeded", "training.kubeflow.org/job-name",
                 "the Kubeflow training operator v1 (release-1.9; Trainer v2 has no TensorFlow runtime)")
KINDS = {kind.name: kind for kind in (TRAIN_JOB, TF_JOB)}
# The framework of each trainer (pipelines/pipeline.py TRAINERS) -> the job kind that starts its workers.
KIND_OF_FRAMEWORK = {"pytorch": TRAIN_JOB.name, "keras": TF_JOB.name}
# The trainer's custom_config key that holds the job's settings (as TFX's Vertex extension keeps its
# CustomJob under ai_platform_training_args); run_fn ignores it.
JOB_KEY = "kubeflow_training_job"
# A TrainJob's runtime: Kubeflow Trainer's torch runtime, installed with it.
DEFAULT_RUNTIME = "torch-distributed"
RUNTIME_KIND = "ClusterTrainingRuntime"
# The runtime's replicated job (and container) of training nodes; runtimePatches address it by name.
TRAINER_NODE = "node"
# Whose patch the TrainJob's runtimePatches entry is (Trainer wants a domain-prefixed name).
PATCH_MANAGER = "mnist-bakeoff/multi-worker-trainer"
# A TFJob's container name the operator requires.
TF_CONTAINER = "tensorflow"
# A job that has not ended by then is stopped by its operator (pods that never schedule, a hung
# collective): the step fails instead of waiting for ever.
ACTIVE_DEADLINE_SECONDS = 24 * 3600
# Kubeflow's profile namespaces inject Istio sidecars, which never exit: a replica whose trainer
# ended would never complete, and the replicas' rendezvous ports sit behind the proxy.
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}
# The keys of the object store's secret (pipelines/kubeflow/placement.py OBJECT_STORE_KEYS gives the
# steps the same): a TrainJob's trainer takes env entries only, not a whole secret (envFrom).
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """What the compile puts under JOB_KEY: everything about the job but the run's artifacts."""

    kind: str
    replicas: int
    image: str
    namespace: str = ""
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)  # {"limits": {...}, "requests": {...}}
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    secret_env: str = ""  # a Kubernetes secret every replica gets as environment (the object store's keys)
    service_account: str = ""  # the pods' (they read and write the pipeline root); empty: the namespace's default
    runtime: str = ""  # a TrainJob's ClusterTrainingRuntime

    def __post_init__(self) -> None:
        if self.kind == "PyTorchJob":
            raise ValueError(f"{JOB_KEY}: kind PyTorchJob (the v1 training operator) is replaced by Kubeflow "
                             "Trainer v2's TrainJob: recompile the package")
        if self.kind not in KINDS:
            raise ValueError(f"{JOB_KEY}: kind {self.kind!r} is not one of {sorted(KINDS)}")
        if self.replicas < 2:
            raise ValueError(f"{JOB_KEY}: a multi-worker job needs 2 or more replicas, got {self.replicas}")
        if not self.image:
            raise ValueError(f"{JOB_KEY}: no image")
        if self.kind == TRAIN_JOB.name and not self.runtime:
            raise ValueError(f"{JOB_KEY}: a TrainJob needs a runtime (a {RUNTIME_KIND}, e.g. {DEFAULT_RUNTIME})")
        if self.kind != TRAIN_JOB.name and self.runtime:
            raise ValueError(f"{JOB_KEY}: runtime {self.runtime!r} is for a TrainJob, not a {self.kind}")

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> JobSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"{JOB_KEY}: unknown keys {unknown}")
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Ending:
    """How a job ended: "Succeeded" or "Failed", with its operator's reason and message."""

    state: str
    reason: str = ""
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.state == "Succeeded"

    def describe(self) -> str:
        why = ": ".join(part for part in (self.reason, self.message) if part)
        return f"{self.state} ({why})" if why else self.state


def job_name(trainer_id: str) -> str:
    """A fresh RFC 1035 name per launch (a retried step must not meet its earlier job)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", trainer_id.lower()).strip("-")[:40] or "trainer"
    if not stem[0].isalpha():
        stem = "t-" + stem
    return f"{stem}-{secrets.token_hex(4)}"


def _pod_spec(settings: JobSettings) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod["tolerations"] = [dict(t) for t in settings.tolerations]
    return pod


def _secret_env(secret: str) -> list[dict[str, Any]]:
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in SECRET_KEYS]


def _train_job_spec(settings: JobSettings, command: list[str]) -> dict[str, Any]:
    # numProcPerNode 1: one trainer process per pod, holding all of the pod's accelerators (as the
    # single-container trainer does); the runtime's "auto" would start one per GPU, or per CPU core.
    trainer: dict[str, Any] = {"image": settings.image, "command": list(command), "numNodes": settings.replicas,
                               "numProcPerNode": 1}
    if settings.resources:
        trainer["resourcesPerNode"] = settings.resources
    if settings.secret_env:
        trainer["env"] = _secret_env(settings.secret_env)
    pod: dict[str, Any] = {"metadata": {"annotations": dict(POD_ANNOTATIONS)}}
    if _pod_spec(settings):
        pod["spec"] = _pod_spec(settings)
    node_patch = {"name": TRAINER_NODE, "template": {"spec": {"template": pod}}}
    return {
        "runtimeRef": {"name": settings.runtime, "apiGroup": TRAIN_JOB.group, "kind": RUNTIME_KIND},
        "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
        "trainer": trainer,
        "runtimePatches": [{"manager": PATCH_MANAGER,
                            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_patch]}}}}],
    }


def _tf_replica(settings: JobSettings, count: int, command: list[str]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": TF_CONTAINER, "image": settings.image, "command": list(command)}
    if settings.resources:
        container["resources"] = settings.resources
    if settings.secret_env:
        container["envFrom"] = [{"secretRef": {"name": settings.secret_env}}]
    # Never: a replica that failed is not restarted alone into a collective the others have left.
    return {"replicas": count, "restartPolicy": "Never",
            "template": {"metadata": {"annotations": dict(POD_ANNOTATIONS)},
                         "spec": {"containers": [container], **_pod_spec(settings)}}}


def _tf_job_spec(settings: JobSettings, command: list[str]) -> dict[str, Any]:
    """One Chief (the only replica that exports) and replicas-1 Workers."""
    return {
        # When the job ends, replicas still running (workers of a failed chief) are deleted;
        # finished pods stay for their logs.
        "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0, "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS},
        "tfReplicaSpecs": {"Chief": _tf_replica(settings, 1, command),
                           "Worker": _tf_replica(settings, settings.replicas - 1, command)},
    }


def render(settings: JobSettings, name: str, namespace: str, command: list[str],
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The job manifest: `settings.replicas` pods each running `command` (the same TFX Trainer
    executor invocation)."""
    kind = KINDS[settings.kind]
    spec = _train_job_spec(settings, command) if kind is TRAIN_JOB else _tf_job_spec(settings, command)
    return {
        "apiVersion": f"{kind.group}/{kind.version}",
        "kind": kind.name,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "mnist-bakeoff", **(labels or {})}},
        "spec": spec,
    }


def replica_images(manifest: dict[str, Any]) -> list[str]:
    """The image of every replica a rendered manifest starts (what presubmit compares with the step's)."""
    spec = manifest.get("spec", {})
    if manifest.get("kind") == TRAIN_JOB.name:
        return [spec.get("trainer", {}).get("image", "")]
    return [container.get("image", "") for replica in spec.get("tfReplicaSpecs", {}).values()
            for container in replica.get("template", {}).get("spec", {}).get("containers", [])]


def true_conditions(job: dict[str, Any]) -> list[str]:
    return [c.get("type", "") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]


def ending(kind: JobKind, job: dict[str, Any]) -> Ending | None:
    """How the job ended once its operator says so (its last true Complete/Succeeded or Failed
    condition), else None."""
    for condition in reversed((job.get("status") or {}).get("conditions") or []):
        if condition.get("status") == "True" and condition.get("type") in (kind.succeeded, "Failed"):
            state = "Succeeded" if condition["type"] == kind.succeeded else "Failed"
            return Ending(state, condition.get("reason") or "", condition.get("message") or "")
    return None
