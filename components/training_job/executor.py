"""The executors of a multi-worker trainer step: the step itself only launches its replicas and
waits for them; each replica runs TFX's Trainer executor (components/training_job/replica.py).

- `Executor` (Kubeflow): creates the trainer's PyTorchJob or TFJob (components/training_job/job.py)
  through the in-cluster Kubernetes API and waits for the operator to mark it Succeeded or Failed.
  It needs the Kubeflow training operator on the cluster and a service account allowed to create
  and get pytorchjobs / tfjobs.kubeflow.org in the namespace.
- `VertexExecutor`: TFX's Vertex training extension (a Vertex AI CustomJob whose worker pools
  run the executor), with its replicas running `ReplicaExecutor`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import name_utils

from components.cluster import custom_objects_api, pod_namespace
from components.training_job import job, replica

POLL_SECONDS = 30.0


def replica_command(input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
                    exec_properties: dict[str, Any]) -> list[str]:
    """Every replica's command: the Trainer executor with this step's artifacts and properties, as
    TFX's Vertex extension passes them to its replicas (tfx.scripts.run_executor's arguments)."""
    return ["python", "-m", "pipelines", "replica",  # the image's one entry point (pipelines/cli.py)
            "--executor_class_path", name_utils.get_full_name(replica.ReplicaExecutor),
            "--inputs", artifact_utils.jsonify_artifact_dict(input_dict),
            "--outputs", artifact_utils.jsonify_artifact_dict(output_dict),
            "--exec-properties", json.dumps(exec_properties, sort_keys=True)]


def job_settings(exec_properties: dict[str, Any]) -> job.JobSettings:
    custom_config = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
    if job.JOB_KEY not in custom_config:
        raise ValueError(f"'{job.JOB_KEY}' not found in the trainer's custom_config: compile with "
                         "kfp_trainer_workers > 1 (pipelines/kubeflow/compile.py)")
    return job.JobSettings.from_dict(custom_config[job.JOB_KEY])


def _api_problem(error: Exception, kind: str, plural: str, namespace: str) -> str | None:
    """What a refused request means, in the user's terms; None for anything else."""
    status = getattr(error, "status", None)
    if status == 404:
        return (f"the cluster has no {job.GROUP}/{job.VERSION} {plural}: the Kubeflow training operator is "
                f"not installed (it runs {kind}s), or namespace {namespace!r} does not exist")
    if status == 403:
        return (f"this step's service account may not create or get {plural}.{job.GROUP} in namespace "
                f"{namespace!r}: grant it create and get (a Role and RoleBinding)")
    return None


def _logs_hint(manifest: dict[str, Any]) -> str:
    metadata = manifest["metadata"]
    return f"kubectl logs -n {metadata['namespace']} -l training.kubeflow.org/job-name={metadata['name']}"


def submit_and_wait(manifest: dict[str, Any], poll: float = POLL_SECONDS) -> str:
    """Creates the job through the in-cluster Kubernetes API and waits for its end; its final state.
    A wait that does not end normally (the step cancelled or killed) deletes the job, so no replica
    keeps its accelerator for a step that is gone; a job that ended stays, with its pods' logs."""
    from kubernetes.client.rest import ApiException

    api = custom_objects_api("multi-worker trainer", f"creates a {manifest['kind']} on the Kubeflow cluster "
                             "it runs in (compile kfp_trainer_workers > 1 for kfp_target kubeflow only)")
    kind, plural = manifest["kind"], job.KINDS[manifest["kind"]][0]
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(job.GROUP, job.VERSION, namespace, plural, manifest)
    except ApiException as e:
        problem = _api_problem(e, kind, plural, namespace)
        raise RuntimeError(problem or f"creating {kind} {namespace}/{name}: {e}") from e
    logging.info("created %s %s/%s; its replicas' logs: %s", kind, namespace, name, _logs_hint(manifest))
    ended, seen = False, None
    try:
        while True:
            current = api.get_namespaced_custom_object(job.GROUP, job.VERSION, namespace, plural, name)
            conditions = [c.get("type") for c in current.get("status", {}).get("conditions", []) or []
                          if c.get("status") == "True"]
            if conditions != seen:
                logging.info("%s %s/%s: %s", kind, namespace, name, ", ".join(conditions) or "pending")
                seen = conditions
            state = job.job_state(current)
            if state:
                ended = True
                return state
            time.sleep(poll)
    finally:
        if not ended:
            try:
                api.delete_namespaced_custom_object(job.GROUP, job.VERSION, namespace, plural, name)
                logging.warning("deleted %s %s/%s: this step stopped waiting for it", kind, namespace, name)
            except ApiException as e:
                logging.warning("could not delete %s %s/%s (%s): delete it by hand", kind, namespace, name, e)


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = job_settings(exec_properties)
        # KFP's v2 entry point gives the executor no pipeline node: name the job by its framework.
        framework = {kind: name for name, kind in job.KIND_OF_FRAMEWORK.items()}[settings.kind]
        trainer_id = (self._context.pipeline_node.node_info.id
                      if self._context and getattr(self._context, "pipeline_node", None) else f"{framework}-trainer")
        manifest = job.render(settings, job.job_name(trainer_id), pod_namespace(settings.namespace),
                              replica_command(input_dict, output_dict, exec_properties),
                              labels={"mnist-bakeoff/trainer": trainer_id[:63]})
        state = submit_and_wait(manifest)
        if state != "Succeeded":
            raise RuntimeError(f"{manifest['kind']} {manifest['metadata']['namespace']}/{manifest['metadata']['name']} "
                               f"ended {state}; its pods' logs say why ({_logs_hint(manifest)})")


class VertexExecutor(vertex_trainer_executor.GenericExecutor):
    """TFX's Vertex AI training extension, whose replicas run ReplicaExecutor."""

    def _GetExecutorClass(self):
        return replica.ReplicaExecutor
