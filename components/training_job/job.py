"""The Kubeflow training operator's job for one trainer: N replicas of the same TFX Trainer executor
(a PyTorchJob for the PyTorch trainer, a TFJob for Keras), rendered as the manifest the executor
creates. The operator gives each replica the environment trainers/distributed.py reads: MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, RANK in a PyTorchJob; TF_CONFIG ({"cluster": {"chief": [...], "worker":
[...]}, "task": ...}) in a TFJob."""

from __future__ import annotations

import dataclasses
import re
import secrets
from typing import Any

GROUP, VERSION = "kubeflow.org", "v1"
# kind -> (plural, the replica-specs field, chief replica type, worker replica type, container name
# the operator requires)
KINDS = {
    "PyTorchJob": ("pytorchjobs", "pytorchReplicaSpecs", "Master", "Worker", "pytorch"),
    "TFJob": ("tfjobs", "tfReplicaSpecs", "Chief", "Worker", "tensorflow"),
}
# The framework of each trainer (pipelines/pipeline.py TRAINERS) -> the job kind that starts its workers.
KIND_OF_FRAMEWORK = {"pytorch": "PyTorchJob", "keras": "TFJob"}
# The trainer's custom_config key that holds the job's settings (as TFX's Vertex extension keeps its
# CustomJob under ai_platform_training_args); run_fn ignores it.
JOB_KEY = "kubeflow_training_job"
# The operator sets a PyTorchJob's MASTER_PORT to this container port (its default is 23456).
PYTORCH_PORT = 23456
# A job that has not ended by then is stopped by the operator (pods that never schedule, a hung
# collective): the step fails instead of waiting for ever.
ACTIVE_DEADLINE_SECONDS = 24 * 3600
# Kubeflow's profile namespaces inject Istio sidecars, which never exit: a replica whose trainer
# ended would never complete, and the replicas' rendezvous ports sit behind the proxy.
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}


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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{JOB_KEY}: kind {self.kind!r} is not one of {sorted(KINDS)}")
        if self.replicas < 2:
            raise ValueError(f"{JOB_KEY}: a multi-worker job needs 2 or more replicas, got {self.replicas}")
        if not self.image:
            raise ValueError(f"{JOB_KEY}: no image")

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> JobSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"{JOB_KEY}: unknown keys {unknown}")
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def job_name(trainer_id: str) -> str:
    """A fresh DNS-1123 name per launch (a retried step must not meet its earlier job)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", trainer_id.lower()).strip("-")[:40] or "trainer"
    return f"{stem}-{secrets.token_hex(4)}"


def _replica(settings: JobSettings, count: int, command: list[str]) -> dict[str, Any]:
    _, _, _, _, container_name = KINDS[settings.kind]
    container: dict[str, Any] = {"name": container_name, "image": settings.image, "command": list(command)}
    if settings.resources:
        container["resources"] = settings.resources
    if settings.secret_env:
        container["envFrom"] = [{"secretRef": {"name": settings.secret_env}}]
    if settings.kind == "PyTorchJob":
        container["ports"] = [{"name": "pytorchjob-port", "containerPort": PYTORCH_PORT}]
    pod: dict[str, Any] = {"containers": [container]}
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod["tolerations"] = [dict(t) for t in settings.tolerations]
    # Never: a replica that failed is not restarted alone into a collective the others have left.
    return {"replicas": count, "restartPolicy": "Never",
            "template": {"metadata": {"annotations": dict(POD_ANNOTATIONS)}, "spec": pod}}


def render(settings: JobSettings, name: str, namespace: str, command: list[str],
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The job manifest: one chief replica (the only one that exports) and replicas-1 workers, each
    running `command` (the same TFX Trainer executor invocation)."""
    _, specs_field, chief, worker, _ = KINDS[settings.kind]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": settings.kind,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "mnist-bakeoff", **(labels or {})}},
        "spec": {
            # When the job ends, replicas still running (workers of a failed chief) are deleted;
            # finished pods stay for their logs.
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0,
                          "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS},
            specs_field: {chief: _replica(settings, 1, command),
                          worker: _replica(settings, settings.replicas - 1, command)},
        },
    }


def job_state(job: dict[str, Any]) -> str | None:
    """"Succeeded" or "Failed" once the operator says so (the job's last true condition), else None."""
    for condition in reversed(job.get("status", {}).get("conditions", []) or []):
        if condition.get("status") == "True" and condition.get("type") in ("Succeeded", "Failed"):
            return condition["type"]
    return None
