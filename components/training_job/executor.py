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


def submit_and_wait(manifest: dict[str, Any], poll: float = POLL_SECONDS) -> str:
    """Creates the job through the in-cluster Kubernetes API and waits for its end; its final state."""
    api = custom_objects_api("multi-worker trainer", f"creates a {manifest['kind']} on the Kubeflow cluster "
                             "it runs in (compile kfp_trainer_workers > 1 for kfp_target kubeflow only)")
    plural = job.KINDS[manifest["kind"]][0]
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    api.create_namespaced_custom_object(job.GROUP, job.VERSION, namespace, plural, manifest)
    logging.info("created %s %s/%s", manifest["kind"], namespace, name)
    while True:
        state = job.job_state(api.get_namespaced_custom_object(job.GROUP, job.VERSION, namespace, plural, name))
        if state:
            return state
        time.sleep(poll)


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = job_settings(exec_properties)
        trainer_id = (self._context.pipeline_node.node_info.id
                      if self._context and getattr(self._context, "pipeline_node", None) else "trainer")
        manifest = job.render(settings, job.job_name(trainer_id), pod_namespace(settings.namespace),
                              replica_command(input_dict, output_dict, exec_properties),
                              labels={"mnist-bakeoff/trainer": trainer_id[:63]})
        state = submit_and_wait(manifest)
        if state != "Succeeded":
            raise RuntimeError(f"{manifest['kind']} {manifest['metadata']['namespace']}/{manifest['metadata']['name']} "
                               f"ended {state}; its pods' logs say why (kubectl logs -l "
                               f"training.kubeflow.org/job-name={manifest['metadata']['name']})")


class VertexExecutor(vertex_trainer_executor.GenericExecutor):
    """TFX's Vertex AI training extension, whose replicas run ReplicaExecutor."""

    def _GetExecutorClass(self):
        return replica.ReplicaExecutor
