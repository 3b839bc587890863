"""The pre-submit check: everything that would make a compiled package fail or misbehave on its
target (Kubeflow Pipelines or Vertex AI), one sentence per problem, before a cluster sees it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines import validation
from pipelines.config import REPO_ROOT
from pipelines.kubeflow import cluster_presubmit, entrypoint, tuning_presubmit
from pipelines.kubeflow.package import CONTAINER_PATH_PREFIXES, IMAGE_PROJECT_DIR, Package
from pipelines.kubeflow.placement import (
    GKE_GPU_LABEL,
    GKE_TPU_LABEL,
    GKE_TPU_TOPOLOGY_LABEL,
    GPU_RESOURCE,
    KUBEFLOW_ACCELERATORS,
    TPU_RESOURCE,
    VERTEX_ACCELERATORS,
)
from pipelines.pipeline import CHAMPION_RESOLVER

# A registry a pod can reach: an MLflow tracking server, or Databricks' hosted one.
REMOTE_REGISTRY = re.compile(r"^(https?://|databricks)")
# TFX executors write artifacts through tf.io.gfile: gs:// natively; s3:// (and KFP's minio://, the
# same bucket on the cluster's S3 endpoint) through tensorflow-io, which the package's executor
# command (pipelines/kubeflow/entrypoint.py) enables. Vertex AI's pipeline root is Cloud Storage.
REMOTE_PIPELINE_ROOT = {"kubeflow": ("gs://", "s3://", "minio://"), "vertex": ("gs://",)}
PLACEHOLDER_BUCKET = "YOUR-BUCKET"
# The image's PyTorch wheels are built for CUDA 13, which needs this NVIDIA driver or newer on the
# node (TensorFlow 2.16's CUDA 12.3 libraries need 525); infra/image_check.py checks the libraries.
MIN_NVIDIA_DRIVER = 580
# Prefixes that can only mean the machine that compiled the package.
LOCAL_PATH = re.compile(r"(^|[\s'\"=])(/home/|/Users/|/root/|file://|sqlite:|[A-Za-z]:\\)")


def _image_problem(label: str, image: str) -> str | None:
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or tag in ("", "latest"):
        return (f"executor {label}: image {image!r} is not pinned; tag it with the code revision "
                "(infra/build_image.sh) or a @sha256 digest")
    return None


def _accelerator_problems(package: Package, label: str, accelerator: dict[str, Any],
                          target: str) -> list[str]:
    kind = accelerator.get("type", "")
    valid = KUBEFLOW_ACCELERATORS if target == "kubeflow" else VERTEX_ACCELERATORS
    if kind not in valid:
        return [f"executor {label}: accelerator {kind!r} is not valid on {target} "
                f"(one of {', '.join(sorted(valid))})"]
    if target != "kubeflow":
        return []
    labels = package.kubernetes_executors.get(label, {}).get("nodeSelector", {}).get("labels", {})
    needed = {GPU_RESOURCE: [GKE_GPU_LABEL], TPU_RESOURCE: [GKE_TPU_LABEL, GKE_TPU_TOPOLOGY_LABEL]}
    if not labels:
        return [f"executor {label}: requests {kind} but has no node selector in the kubernetes "
                "platform section"]
    return [f"executor {label}: requests {kind} but its node selector lacks {key}"
            for key in needed.get(kind, []) if key not in labels]


def _parameter_values(package: Package, overrides: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(task, parameter, value) of every constant or pipeline-level parameter of every task."""
    defaults = {name: p.get("defaultValue") for name, p in package.root_parameters.items()}
    defaults.update(overrides)
    values = []
    for task_id, task in package.tasks.items():
        for name, param in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in param:
                value = defaults.get(param["componentInputParameter"])
            else:
                constant = param.get("runtimeValue", {}).get("constant",
                                                             param.get("runtimeValue", {}).get("constantValue"))
                value = constant.get("stringValue", constant) if isinstance(constant, dict) else constant
            values.append((task_id, name, value))
    return values


def _local_path_problem(task_id: str, name: str, value: Any) -> str | None:
    if not isinstance(value, str) or name == "registry_uri":
        return None
    outside_image = value.startswith("/") and not value.startswith(CONTAINER_PATH_PREFIXES)
    if LOCAL_PATH.search(value) or str(REPO_ROOT) in value or outside_image:
        return (f"task {task_id}: parameter {name} = {value!r} is a path of the machine that "
                f"compiled it; use a path inside the image ({IMAGE_PROJECT_DIR}/...) or a remote URI")
    return None


def _registry_problem(task_id: str, value: Any) -> str | None:
    if isinstance(value, str):
        try:
            validation.check_registry_uri(value, f"task {task_id}: registry_uri")
        except ValueError as e:
            return str(e)
    if isinstance(value, str) and REMOTE_REGISTRY.match(value):
        return None
    return (f"task {task_id}: registry_uri {value!r} is not a registry a cluster can reach; use an "
            "http(s):// MLflow tracking server (infra/mlflow/, compile --kfp-registry-uri)")


def _pipeline_root_problem(root: str | None, target: str) -> str | None:
    if not root:
        return "no pipeline root: the package has no defaultPipelineRoot and none was given (--pipeline-root)"
    if PLACEHOLDER_BUCKET in root:
        return f"pipeline root {root!r} is the placeholder; compile with kfp_pipeline_root or pass --pipeline-root"
    if not root.startswith(REMOTE_PIPELINE_ROOT[target]):
        return (f"pipeline root {root!r} is not storage the TFX executors can write to on {target} "
                f"({' or '.join(REMOTE_PIPELINE_ROOT[target])}; tf.io.gfile in the image)")
    return None


def _object_store_problems(package: Package, root: str | None, target: str) -> list[str]:
    """An s3:// or minio:// root on Kubeflow: every task needs the store's keys from a secret."""
    if target != "kubeflow" or not root or not root.startswith(("s3://", "minio://")):
        return []
    missing = sorted(label for label in package.executors
                     if not package.kubernetes_executors.get(label, {}).get("secretAsEnv"))
    if not missing:
        return []
    return [f"pipeline root {root!r} is an S3 store but the executors {', '.join(missing)} get no secret with "
            "its keys; compile with kfp_object_store_secret (a Kubernetes secret with AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION)"]


# The stages that judge against the champion, and what each must read from a secret (kubeflow target).
JUDGES = ("ImageValidator", "DriftValidator", "BakeoffEvaluator", "RegistryPusher")
KEY_VARIABLES = {"RegistryPusher": "MNIST_MODEL_SIGNING_KEY", "ChampionResolver": "MNIST_MODEL_VERIFY_KEY",
                 "BakeoffEvaluator": "MNIST_MODEL_VERIFY_KEY"}


def champion_problems(package: Package, target: str) -> list[str]:
    """The champion is resolved at the head of every run, never from the cache, before every stage
    that judges against it; on Kubeflow the tasks that sign and verify get the keys from secrets."""
    resolver = package.tasks.get(CHAMPION_RESOLVER)
    if resolver is None:
        return [f"no {CHAMPION_RESOLVER} task: the run would not know which champion it is judged against; recompile"]
    problems = []
    if resolver.get("cachingOptions", {}).get("enableCache", True):
        problems.append(f"task {CHAMPION_RESOLVER} may be taken from the cache: a run could be judged against a "
                        "champion that is no longer the champion; recompile (its cachingOptions are set off)")
    for task_id in JUDGES:
        if task_id in package.tasks and CHAMPION_RESOLVER not in package.tasks[task_id].get("dependentTasks", []):
            problems.append(f"task {task_id} does not take {CHAMPION_RESOLVER}'s champion: recompile")
    for task_id, variable in KEY_VARIABLES.items() if target == "kubeflow" else ():
        label = package.executor_label(task_id)
        given = {m["envVar"] for secret in package.kubernetes_executors.get(label, {}).get("secretAsEnv", [])
                 for m in secret.get("keyToEnv", [])}
        if variable not in given:
            problems.append(f"task {task_id} gets no {variable} from a secret (kfp_model_signing_secret, "
                            "kfp_model_verify_secret): it cannot sign or verify a registered version")
    return problems


def presubmit_problems(path: str | Path, target: str, *, pipeline_root: str | None = None,
                       parameters: dict[str, Any] | None = None) -> list[str]:
    """Everything that would make `path` fail or misbehave on `target`, one sentence each."""
    from kfp import components

    package = Package.read(path)
    try:
        components.load_component_from_file(str(path))
    except Exception as e:  # kfp raises assorted types for a malformed spec; the check reports it
        return [f"kfp cannot load the package: {e}"]
    problems: list[str] = []
    for label, executor in package.executors.items():
        container = executor.get("container", {})
        problems.append(_image_problem(label, container.get("image", "")))
        if container.get("command") != entrypoint.COMMAND:
            problems.append(f"executor {label}: command {container.get('command')} is not "
                            f"{' '.join(entrypoint.COMMAND)} (without it s3:// and minio:// roots fail); recompile")
        accelerator = container.get("resources", {}).get("accelerator")
        if accelerator:
            problems += _accelerator_problems(package, label, accelerator, target)
        problems += cluster_presubmit.beam_problems(label, container)
    for label in package.kubernetes_executors:
        if label not in package.executors:
            problems.append(f"kubernetes platform section names executor {label!r}, which the package lacks")
    if target == "vertex" and package.platform:
        problems.append("the package has a kubernetes platform section, which Vertex AI does not apply; "
                        "compile with kfp_target: vertex")
    values = _parameter_values(package, parameters or {})
    for task_id, name, value in values:
        problems.append(_local_path_problem(task_id, name, value))
        if name == "registry_uri":
            problems.append(_registry_problem(task_id, value))
    root = pipeline_root or package.spec.get("defaultPipelineRoot")
    problems += cluster_presubmit.training_job_problems(package, target, values, root)
    problems += cluster_presubmit.beam_root_problems(package, root)
    problems.append(_pipeline_root_problem(root, target))
    problems += _object_store_problems(package, root, target)
    problems += champion_problems(package, target)
    problems += tuning_presubmit.tuning_problems(package, target)
    return [f"{path}: {p}" for p in problems if p]


def presubmit_warnings(path: str | Path) -> list[str]:
    """What a package needs of the cluster that it cannot check itself: the GPU nodes' driver, the
    Beam SDK entrypoint in the image of a remote runner."""
    package = Package.read(path)
    warnings = [f"{path}: {w}" for w in cluster_presubmit.cluster_warnings(package)]
    if not package.platform:  # Vertex AI: no Kubernetes secrets
        warnings.append(f"{path}: on Vertex AI no Kubernetes secret gives the pusher MNIST_MODEL_SIGNING_KEY and the "
                        "resolver and evaluator MNIST_MODEL_VERIFY_KEY: set them in the image's environment (or "
                        "the tasks fail closed: nothing is registered or loaded unsigned)")
    for label, executor in sorted(package.executors.items()):
        kind = executor.get("container", {}).get("resources", {}).get("accelerator", {}).get("type", "")
        if kind == GPU_RESOURCE or kind.startswith("NVIDIA_"):
            warnings.append(f"{path}: executor {label} requests a GPU ({kind}): its nodes need NVIDIA driver "
                            f">= {MIN_NVIDIA_DRIVER} (the image's PyTorch is built for CUDA 13); older drivers "
                            "fail at the first CUDA call")
    return warnings
