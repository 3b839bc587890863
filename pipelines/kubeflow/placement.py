"""Where the two trainers run on the cluster: the accelerator request (ResourceSpec), and the
node selector and tolerations of the package's Kubernetes platform section.

TFX's KubeflowV2DagRunner writes the ResourceSpec but no node selector or toleration, so
`place_trainers` adds them as the second YAML document of the package, in the form kfp-kubernetes
writes (`kfp.kubernetes.add_node_selector`, `add_toleration`):
platforms.kubernetes.deploymentSpec.executors.<executor label>.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.config import PipelineConfig
from pipelines.kubeflow.package import Package

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

GPU_RESOURCE = "nvidia.com/gpu"
TPU_RESOURCE = "google.com/tpu"
GKE_GPU_LABEL = "cloud.google.com/gke-accelerator"
GKE_TPU_LABEL = "cloud.google.com/gke-tpu-accelerator"
GKE_TPU_TOPOLOGY_LABEL = "cloud.google.com/gke-tpu-topology"
# GKE taints accelerator node pools with these keys; pods tolerate them to be scheduled there.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
TPU_TOLERATION = {"key": TPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

# Accelerator names each target accepts in a ResourceSpec: Kubernetes extended resources on
# open-source KFP; Vertex AI's AcceleratorType enum on Vertex.
KUBEFLOW_ACCELERATORS = frozenset({GPU_RESOURCE, "amd.com/gpu", TPU_RESOURCE})
GKE_TO_VERTEX_ACCELERATOR = {
    "nvidia-tesla-k80": "NVIDIA_TESLA_K80", "nvidia-tesla-p4": "NVIDIA_TESLA_P4",
    "nvidia-tesla-p100": "NVIDIA_TESLA_P100", "nvidia-tesla-v100": "NVIDIA_TESLA_V100",
    "nvidia-tesla-t4": "NVIDIA_TESLA_T4", "nvidia-tesla-a100": "NVIDIA_TESLA_A100",
    "nvidia-a100-80gb": "NVIDIA_A100_80GB", "nvidia-l4": "NVIDIA_L4",
    "nvidia-h100-80gb": "NVIDIA_H100_80GB", "tpu-v5-lite-podslice": "TPU_V5_LITEPOD",
}
# What a task needs of an S3 store; the secret holds them under these names (components/object_store.py).
OBJECT_STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
VERTEX_ACCELERATORS = frozenset({*GKE_TO_VERTEX_ACCELERATOR.values(), "TPU_V2", "TPU_V3"})


def accelerator_resource(cfg: PipelineConfig) -> str | None:
    """The accelerator name the ResourceSpec carries for `cfg.kfp_target`, None for no accelerator."""
    if cfg.kfp_accelerator == "none":
        return None
    if cfg.kfp_target == "kubeflow":
        return GPU_RESOURCE if cfg.kfp_accelerator == "gpu" else TPU_RESOURCE
    name = GKE_TO_VERTEX_ACCELERATOR.get(cfg.kfp_accelerator_type, cfg.kfp_accelerator_type)
    if name not in VERTEX_ACCELERATORS:
        raise ValueError(f"kfp_accelerator_type {cfg.kfp_accelerator_type!r} has no Vertex AI name; "
                         f"use one of {sorted(VERTEX_ACCELERATORS)} or a GKE label of "
                         f"{sorted(GKE_TO_VERTEX_ACCELERATOR)}")
    return name


def trainer_node_selector(cfg: PipelineConfig) -> dict[str, str]:
    """Node labels a trainer pod must land on: the accelerator's GKE labels plus the extra ones."""
    labels: dict[str, str] = {}
    if cfg.kfp_accelerator == "gpu":
        labels[GKE_GPU_LABEL] = cfg.kfp_accelerator_type
    elif cfg.kfp_accelerator == "tpu":
        labels[GKE_TPU_LABEL] = cfg.kfp_accelerator_type
        labels[GKE_TPU_TOPOLOGY_LABEL] = cfg.kfp_tpu_topology
    labels.update(cfg.kfp_node_selector)
    return labels


def trainer_tolerations(cfg: PipelineConfig) -> list[dict[str, Any]]:
    default = {"gpu": [GPU_TOLERATION], "tpu": [TPU_TOLERATION], "none": []}[cfg.kfp_accelerator]
    return [dict(t) for t in default] + [dict(t) for t in cfg.kfp_tolerations]


def trainer_kubernetes_config(cfg: PipelineConfig) -> dict[str, Any]:
    """One trainer's KubernetesExecutorConfig as kfp-kubernetes serialises it (JSON names);
    empty for Vertex, which places pods from the accelerator type itself."""
    if cfg.kfp_target != "kubeflow":
        return {}
    config: dict[str, Any] = {}
    selector = trainer_node_selector(cfg)
    if selector:
        config["nodeSelector"] = {"labels": selector}
    tolerations = trainer_tolerations(cfg)
    if tolerations:
        config["tolerations"] = tolerations
    return config


def trainer_resources(cfg: PipelineConfig) -> ResourceSpec | None:
    """What each trainer asks a Kubeflow node for (LocalDagRunner accepts no ResourceSpec):
    accelerator, CPU and memory; None when nothing is asked."""
    spec = ResourceSpec(cpu_request=cfg.kfp_cpu_request, cpu_limit=cfg.kfp_cpu_limit,
                        memory_request=cfg.kfp_memory_request_gb, memory_limit=cfg.kfp_memory_limit_gb)
    accelerator = accelerator_resource(cfg)
    if accelerator:
        spec.accelerator.type = accelerator
        spec.accelerator.count = cfg.kfp_accelerator_count
    return spec if spec.ByteSize() else None


def _kubernetes_executor(package: Package, label: str) -> dict[str, Any]:
    platform = package.platform.setdefault("platforms", {}).setdefault("kubernetes", {})
    return platform.setdefault("deploymentSpec", {}).setdefault("executors", {}).setdefault(label, {})


def place_trainers(package: Package, cfg: PipelineConfig, trainer_ids: Iterable[str]) -> None:
    """Each trainer's node selector and tolerations in the Kubernetes platform section (nothing
    for the other tasks, no section at all when there is nothing to place). A multi-worker
    trainer's step is only its job's launcher: its replicas are placed (training_jobs.py)."""
    config = trainer_kubernetes_config(cfg) if cfg.kfp_trainer_workers == 1 else {}
    for task_id in trainer_ids if config else ():
        _kubernetes_executor(package, package.executor_label(task_id)).update(json.loads(json.dumps(config)))


def place_tuners(package: Package, cfg: PipelineConfig, tuner_ids: Iterable[str]) -> None:
    """The tuner tasks on the trainers' nodes, and (kubeflow target) the PGPASSWORD of their study
    storage from kfp_tune_storage_secret."""
    config = trainer_kubernetes_config(cfg)
    for task_id in tuner_ids:
        executor = _kubernetes_executor(package, package.executor_label(task_id))
        executor.update(json.loads(json.dumps(config)))
        if cfg.kfp_target == "kubeflow":
            executor.setdefault("secretAsEnv", []).append({"secretName": cfg.kfp_tune_storage_secret, "keyToEnv": [
                {"secretKey": TUNING_PASSWORD, "envVar": TUNING_PASSWORD}]})


def object_store_secret_as_env(secret: str) -> list[dict[str, Any]]:
    """kfp-kubernetes' `use_secret_as_env`: the secret's keys, named as the variables, as environment."""
    return [{"secretName": secret, "keyToEnv": [{"secretKey": name, "envVar": name} for name in OBJECT_STORE_KEYS]}]


def attach_object_store_secret(package: Package, cfg: PipelineConfig) -> None:
    """Every task reads the object store's endpoint and keys from `kfp_object_store_secret`, so
    neither the package nor its parameters hold them (kubeflow target; Vertex uses Cloud Storage)."""
    if cfg.kfp_target != "kubeflow" or not cfg.kfp_object_store_secret:
        return
    for label in package.executors:
        _kubernetes_executor(package, label)["secretAsEnv"] = object_store_secret_as_env(cfg.kfp_object_store_secret)


# Which task gets which of the model-signing secrets: the private key to the pusher alone.
SIGNING_KEYS = ("MNIST_MODEL_SIGNING_KEY", "PGPASSWORD")
TUNING_PASSWORD = "PGPASSWORD"  # of the tuner tasks' study storage (libpq reads it)
VERIFY_KEYS = ("MNIST_MODEL_VERIFY_KEY",)


def model_key_secrets(cfg: PipelineConfig, task_id: str) -> list[dict[str, Any]]:
    """The `secretAsEnv` entries of the model-signing secrets that `task_id` gets (kubeflow target):
    the private key to the pusher alone, the public key to the tasks that load a registered version."""
    if cfg.kfp_target != "kubeflow":
        return []
    secrets = {"RegistryPusher": (cfg.kfp_model_signing_secret, SIGNING_KEYS),
               "ChampionResolver": (cfg.kfp_model_verify_secret, VERIFY_KEYS),
               "BakeoffEvaluator": (cfg.kfp_model_verify_secret, VERIFY_KEYS)}
    if task_id not in secrets:
        return []
    secret, keys = secrets[task_id]
    return [{"secretName": secret, "keyToEnv": [{"secretKey": key, "envVar": key} for key in keys]}]


def attach_model_key_secrets(package: Package, cfg: PipelineConfig) -> None:
    """trainers/manifest.py reads the keys from the environment: each task gets the ones it needs."""
    for task_id in package.tasks:
        secrets = model_key_secrets(cfg, task_id)
        if secrets:
            _kubernetes_executor(package, package.executor_label(task_id)).setdefault("secretAsEnv", []).extend(secrets)
