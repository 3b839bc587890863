"""Multi-worker trainers (kfp_trainer_workers > 1): each trainer step launches N replicas of the TFX
Trainer executor instead of training in its own container, and the accelerator moves from the
step to the replicas.

- vertex: TFX's Vertex AI training extension; the trainer's custom_config carries its keys
  (ENABLE_VERTEX_KEY, VERTEX_REGION_KEY, TRAINING_ARGS_KEY = {"project", "job_spec":
  {"worker_pool_specs": [chief pool of 1, worker pool of N-1]}}), every pool on the package's image.
- kubeflow: a TrainJob of Kubeflow Trainer v2 on a torch ClusterTrainingRuntime (PyTorch trainer)
  or a TFJob of the v1 training operator (Keras: Trainer v2 has no TensorFlow runtime), its
  settings under components.training_job.job.JOB_KEY (image, replicas, the runtime, the placement
  of pipelines/kubeflow/placement.py as pod resources, node selector and tolerations).
"""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx

from components.training_job import component, job
from pipelines.config import PipelineConfig
from pipelines.kubeflow import placement
from pipelines.pipeline import TrainerLaunch, in_step_container

VERTEX = tfx.extensions.google_cloud_ai_platform
# Each accelerator's machine family on Vertex AI (the machine types that carry it).
VERTEX_MACHINE_FAMILY = {
    "NVIDIA_L4": "g2-", "NVIDIA_TESLA_A100": "a2-", "NVIDIA_A100_80GB": "a2-", "NVIDIA_H100_80GB": "a3-",
    "NVIDIA_TESLA_T4": "n1-", "NVIDIA_TESLA_V100": "n1-", "NVIDIA_TESLA_P100": "n1-", "NVIDIA_TESLA_P4": "n1-",
    "NVIDIA_TESLA_K80": "n1-", "TPU_V5_LITEPOD": "ct5lp-",
}


def multi_worker(cfg: PipelineConfig) -> bool:
    return cfg.kfp_trainer_workers > 1


def vertex_machine_spec(cfg: PipelineConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {"machine_type": cfg.vertex_machine_type}
    accelerator = placement.accelerator_resource(cfg)
    if accelerator:
        family = VERTEX_MACHINE_FAMILY.get(accelerator)
        if family and not cfg.vertex_machine_type.startswith(family):
            raise ValueError(f"vertex_machine_type {cfg.vertex_machine_type!r} cannot carry {accelerator}: "
                             f"use a {family}* machine type")
        spec.update(accelerator_type=accelerator, accelerator_count=cfg.kfp_accelerator_count)
    return spec


def vertex_custom_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The extension's keys: a CustomJob of one chief replica (pool 0) and N-1 workers (pool 1);
    Vertex sets TF_CONFIG and CLUSTER_SPEC in each, and runs the executor in the package's image."""
    pool = {"machine_spec": vertex_machine_spec(cfg), "container_spec": {"image_uri": cfg.image}}
    return {
        VERTEX.ENABLE_VERTEX_KEY: True,
        VERTEX.VERTEX_REGION_KEY: cfg.gcp_region,
        VERTEX.TRAINING_ARGS_KEY: {
            "project": cfg.gcp_project,
            "job_spec": {"worker_pool_specs": [{**pool, "replica_count": 1},
                                               {**pool, "replica_count": cfg.kfp_trainer_workers - 1}]},
        },
    }


def replica_resources(cfg: PipelineConfig) -> dict[str, Any]:
    """Each replica pod's resources: the trainer step's ResourceSpec of the single-container case."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    accelerator = placement.accelerator_resource(cfg)
    if accelerator:
        limits[accelerator] = str(cfg.kfp_accelerator_count)
    for target, key, value, unit in ((requests, "cpu", cfg.kfp_cpu_request, ""), (limits, "cpu", cfg.kfp_cpu_limit, ""),
                                     (requests, "memory", cfg.kfp_memory_request_gb, "G"),
                                     (limits, "memory", cfg.kfp_memory_limit_gb, "G")):
        if value:
            target[key] = f"{value:g}{unit}"
    return {name: value for name, value in (("limits", limits), ("requests", requests)) if value}


def training_runtime(cfg: PipelineConfig) -> str:
    """The TrainJob's ClusterTrainingRuntime (kfp_training_runtime)."""
    return cfg.kfp_training_runtime


def kubeflow_job_settings(cfg: PipelineConfig, framework: str) -> job.JobSettings:
    kind = job.KIND_OF_FRAMEWORK[framework]
    return job.JobSettings(kind=kind, replicas=cfg.kfp_trainer_workers, image=cfg.image,
                           runtime=training_runtime(cfg) if kind == job.TRAIN_JOB.name else "",
                           namespace=cfg.kfp_training_job_namespace,
                           service_account=cfg.kfp_training_job_service_account,
                           resources=replica_resources(cfg), node_selector=placement.trainer_node_selector(cfg),
                           tolerations=placement.trainer_tolerations(cfg), secret_env=cfg.kfp_object_store_secret)


def trainer_launch(cfg: PipelineConfig) -> TrainerLaunch:
    """How each trainer step trains on the cluster: in its container, or as a multi-worker job."""
    if not multi_worker(cfg):
        return in_step_container
    if cfg.kfp_target == "vertex":
        vertex = vertex_custom_config(cfg)
        return lambda framework: (component.VertexJobTrainer, vertex)
    return lambda framework: (component.KubeflowJobTrainer,
                              {job.JOB_KEY: kubeflow_job_settings(cfg, framework).to_dict()})
