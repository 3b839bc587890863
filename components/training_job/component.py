"""Multi-worker trainers: TFX Trainers (same spec, inputs, outputs and run_fn) whose step launches N
replicas of the Trainer executor instead of training in its own container. The compile chooses
them when kfp_trainer_workers > 1 (pipelines/kubeflow/compile.py)."""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.training_job import executor


class KubeflowJobTrainer(tfx.components.Trainer):
    """Kubeflow target: a TrainJob (PyTorch) or TFJob (Keras) of the trainer's replicas (custom_config[job.JOB_KEY])."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)


class VertexJobTrainer(tfx.extensions.google_cloud_ai_platform.Trainer):
    """Vertex target: TFX's Vertex training extension (a CustomJob with worker pools, from the
    extension's custom_config keys), its replicas running components.training_job.replica."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.VertexExecutor)
