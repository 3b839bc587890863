"""A multi-worker trainer's job on the cluster: created through the Kubernetes API (a custom object:
the `kubeflow` SDK needs kubernetes >= 27.2, which kfp 2.5 rules out), waited for until its operator
marks it ended, and deleted when the step stops waiting early (cancelled, killed, or the API refused
to show it), so no replica keeps its accelerator for a step that is gone. A job that ended stays,
with its pods' logs.

Refused requests become one line naming the job, its namespace and what to do: 404 (the operator's
CRD is not installed, or the namespace does not exist), 403 (the step's service account lacks the
verb; or an admission webhook refused the job), 409 (a job of that name exists: not this step's,
whose names are fresh per launch, so it is neither adopted nor deleted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from components.cluster import custom_objects_api, missing_namespace, refusal
from components.training_job import job

POLL_SECONDS = 30.0
# Answers worth asking again (an API server restarting, throttling): a long training job is not
# abandoned for one of them.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_TRIES = 5
# A poll the API server does not answer within this is a transient failure, not a wait for ever.
REQUEST_TIMEOUT_SECONDS = 60.0
VERBS = "create, get and delete"


class StepCancelled(BaseException):
    """The step's process was told to stop (SIGTERM: KFP deleting the step's pod). A BaseException, so no
    `except Exception` on the way swallows it."""


@dataclasses.dataclass(frozen=True)
class JobRef:
    kind: job.JobKind
    namespace: str
    name: str

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> JobRef:
        return cls(job.KINDS[manifest["kind"]], manifest["metadata"]["namespace"], manifest["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.kind.name} {self.namespace}/{self.name}"

    def args(self) -> tuple[str, str, str, str]:
        return self.kind.group, self.kind.version, self.namespace, self.kind.plural

    def logs_hint(self) -> str:
        return f"kubectl logs -n {self.namespace} -l {self.kind.pod_label}={self.name}"


def refused(error: Exception, ref: JobRef, verb: str) -> RuntimeError:
    """The one line that says what a refused `verb` on the job means and what to do."""
    status, said = getattr(error, "status", None), refusal(error)
    if status == 404 and missing_namespace(error):
        return RuntimeError(f"{ref}: namespace {ref.namespace!r} does not exist (kfp_training_job_namespace)")
    if status == 404 and verb == "create":
        return RuntimeError(f"{ref}: the cluster has no {ref.kind.group}/{ref.kind.version} {ref.kind.plural}: "
                            f"{ref.kind.operator} is not installed")
    if status == 404:
        return RuntimeError(f"{ref} was deleted while this step waited for it")
    if status == 403 and "admission webhook" in said:
        return RuntimeError(f"{ref}: the cluster's admission refused it: {said}")
    if status == 403:
        return RuntimeError(f"{ref}: this step's service account may not {verb} {ref.kind.resource} in namespace "
                            f"{ref.namespace!r}: grant it {VERBS} (a Role and RoleBinding)")
    if status == 409:
        return RuntimeError(f"{ref} exists already and is not this step's (each launch names its job afresh): "
                            "left as it is; delete it or rerun the step")
    return RuntimeError(f"{ref}: {verb} refused: {said}")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM as StepCancelled while waiting: its default action ends the process at once, without
    the cleanup that deletes the job. Signal handlers belong to the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum: int, _frame: Any) -> None:
        raise StepCancelled(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def create(api: Any, ref: JobRef, manifest: dict[str, Any]) -> dict[str, Any]:
    from kubernetes.client.rest import ApiException

    try:
        return api.create_namespaced_custom_object(*ref.args(), manifest)
    except ApiException as e:
        raise refused(e, ref, "create") from e


def dropped_fields(manifest: dict[str, Any], created: dict[str, Any]) -> list[str]:
    """Spec fields the API server pruned from the job (an operator older than this manifest: a
    Trainer before v2.2 knows no runtimePatches and would start the pods unplaced)."""
    return sorted(f"spec.{field}" for field in set(manifest.get("spec", {})) - set((created or {}).get("spec", {})))


def wait(api: Any, ref: JobRef, poll: float) -> job.Ending:
    """Polls the job until its operator marks it ended; logs each change of its conditions."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    seen, failures = None, 0
    while True:
        try:
            current = api.get_namespaced_custom_object(*ref.args(), ref.name, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            failures = 0
        except (ApiException, HTTPError) as e:
            if getattr(e, "status", 503) not in TRANSIENT_STATUS or failures >= TRANSIENT_TRIES:
                raise refused(e, ref, "get") from e
            failures += 1
            logging.warning("%s: get failed (%s), asking again (%d/%d)", ref, refusal(e), failures, TRANSIENT_TRIES)
            time.sleep(poll)
            continue
        conditions = job.true_conditions(current)
        if conditions != seen:
            logging.info("%s: %s", ref, ", ".join(conditions) or "pending")
            seen = conditions
        ended = job.ending(ref.kind, current)
        if ended:
            return ended
        time.sleep(poll)


def delete(api: Any, ref: JobRef) -> None:
    from kubernetes.client.rest import ApiException

    try:
        api.delete_namespaced_custom_object(*ref.args(), ref.name)
        logging.warning("deleted %s: this step stopped waiting for it", ref)
    except ApiException as e:
        if e.status == 404:
            logging.info("%s is gone already", ref)
        else:
            logging.warning("could not delete %s (%s): delete it by hand", ref, refusal(e))


def submit_and_wait(manifest: dict[str, Any], api: Any = None, poll: float = POLL_SECONDS) -> job.Ending:
    """Creates the job (through `api`, a CustomObjectsApi; default: the cluster's) and waits for its end."""
    ref = JobRef.of(manifest)
    api = api or custom_objects_api("multi-worker trainer", f"creates a {ref.kind.name} on the Kubeflow cluster "
                                    "it runs in (compile kfp_trainer_workers > 1 for kfp_target kubeflow only)")
    created = create(api, ref, manifest)
    logging.info("created %s; its replicas' logs: %s", ref, ref.logs_hint())
    ended = False
    try:
        with sigterm_raises():
            dropped = dropped_fields(manifest, created)
            if dropped:
                raise RuntimeError(f"{ref}: the cluster dropped {', '.join(dropped)}: its {ref.kind.operator} is "
                                   "older than this manifest (TrainJob needs Kubeflow Trainer >= v2.2); upgrade it")
            ending = wait(api, ref, poll)
            ended = True
            return ending
    finally:
        if not ended:
            delete(api, ref)
