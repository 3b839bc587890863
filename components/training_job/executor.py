"""The executors of a multi-worker trainer step: the step itself only launches its replicas and
waits for them; each replica runs TFX's Trainer executor (components/training_job/replica.py).

- `Executor` (Kubeflow): creates the trainer's TrainJob (PyTorch, Kubeflow Trainer v2) or TFJob
  (Keras, the v1 training operator: Trainer v2 has no TensorFlow runtime) from
  components/training_job/job.py, through the cluster's Kubernetes API, and waits for it to end
  (components/training_job/submission.py). It needs that operator on the cluster and a service
  account allowed to create, get and delete trainjobs.trainer.kubeflow.org / tfjobs.kubeflow.org
  in the namespace.
- `VertexExecutor`: TFX's Vertex training extension (a Vertex AI CustomJob whose worker pools
  run the executor), with its replicas running `ReplicaExecutor`.
"""

from __future__ import annotations

import json
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import name_utils

from components.cluster import pod_namespace
from components.training_job import job, replica, submission


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


class Executor(base_executor.BaseExecutor):
    # How often the job's state is read; a test's fake API server answers at once.
    poll_seconds: float = submission.POLL_SECONDS

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
        ending = submission.submit_and_wait(manifest, poll=self.poll_seconds)
        if not ending.succeeded:
            ref = submission.JobRef.of(manifest)
            raise RuntimeError(f"{ref} ended {ending.describe()}; its pods' logs say why ({ref.logs_hint()})")


class VertexExecutor(vertex_trainer_executor.GenericExecutor):
    """TFX's Vertex AI training extension, whose replicas run ReplicaExecutor."""

    def _GetExecutorClass(self):
        return replica.ReplicaExecutor
