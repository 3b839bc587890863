"""The pre-submit checks of what runs beyond a step's own container: multi-worker trainer steps (a
Vertex AI CustomJob through TFX's extension; on Kubeflow, a Trainer v2 TrainJob for PyTorch or a
v1 TFJob for Keras, since Trainer v2 has no TensorFlow runtime) and the Beam steps' runner (Direct,
Dataflow, Flink through the portable runner). One sentence per problem."""

from __future__ import annotations

import json
import re
from typing import Any

from tfx import v1 as tfx

from components.training_job import executor as training_job_executor
from components.training_job import job
from pipelines.kubeflow.package import Package
from pipelines.kubeflow.placement import KUBEFLOW_ACCELERATORS, VERTEX_ACCELERATORS
from pipelines.kubeflow.training_jobs import VERTEX_MACHINE_FAMILY
from pipelines.pipeline import TRAINERS

VERTEX = tfx.extensions.google_cloud_ai_platform
VERTEX_EXECUTOR = f"{training_job_executor.__name__}.VertexExecutor"
KUBEFLOW_EXECUTOR = f"{training_job_executor.__name__}.Executor"
PLACEHOLDER = re.compile(r"YOUR[-_]|^(PROJECT|REGION|BUCKET)$", re.IGNORECASE)
DIRECT_RUNNERS = (None, "DirectRunner", "FnApiRunner")
SUPPORTED_RUNNERS = "DirectRunner, DataflowRunner, PortableRunner (Flink)"
HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:\d+$")


def _flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a container's args (the last one wins)."""
    found = None
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(args):
            found = args[i + 1]
    return found


def _unset(value: Any) -> bool:
    return not isinstance(value, str) or not value or bool(PLACEHOLDER.search(value))


def beam_problems(label: str, container: dict[str, Any]) -> list[str]:
    """A Beam step's runner args: a runner we support, with what it needs, the package's image as
    the workers' SDK container."""
    args, image = [str(a) for a in container.get("args", [])], container.get("image", "")
    runner = _flag(args, "runner")
    where = f"executor {label}: Beam runner {runner}"
    if runner in DIRECT_RUNNERS:
        return []
    if runner == "DataflowRunner":
        problems = [f"{where} needs --{name} (not a placeholder)" for name in ("project", "region")
                    if _unset(_flag(args, name))]
        if not (_flag(args, "temp_location") or "").startswith("gs://"):
            problems.append(f"{where} needs --temp_location, a gs:// folder, got {_flag(args, 'temp_location')!r}")
        if _flag(args, "sdk_container_image") != image:
            problems.append(f"{where}: --sdk_container_image {_flag(args, 'sdk_container_image')!r} is not the "
                            f"executor's image {image!r} (the workers need the pipeline's code)")
        return problems
    if runner == "PortableRunner":
        problems = []
        if not HOST_PORT.match(_flag(args, "job_endpoint") or ""):
            problems.append(f"{where} needs --job_endpoint host:port of the Flink job server, got "
                            f"{_flag(args, 'job_endpoint')!r}")
        if _flag(args, "environment_type") != "DOCKER" or _flag(args, "environment_config") != image:
            problems.append(f"{where} needs --environment_type=DOCKER and --environment_config={image} "
                            "(the executor's image as the SDK container)")
        return problems
    return [f"{where} is not one we support ({SUPPORTED_RUNNERS})"]


def _runners(package: Package) -> dict[str, str | None]:
    return {label: _flag([str(a) for a in e.get("container", {}).get("args", [])], "runner")
            for label, e in package.executors.items()}


def beam_root_problems(package: Package, root: str | None) -> list[str]:
    """Dataflow's workers read and write the pipeline root themselves: only Cloud Storage."""
    if not root or root.startswith("gs://"):
        return []
    return [f"executor {label}: Beam runner DataflowRunner cannot reach the pipeline root {root!r} (its workers "
            "read and write gs:// only); use a gs:// pipeline root"
            for label, runner in sorted(_runners(package).items()) if runner == "DataflowRunner"]


def _vertex_pool_problems(where: str, pools: Any, image: str) -> list[str]:
    if not isinstance(pools, list) or len(pools) < 2:
        return [f"{where}: worker_pool_specs needs a chief pool and a worker pool, got {pools!r}"]
    problems = []
    if pools[0].get("replica_count") != 1:
        problems.append(f"{where}: pool 0 (the chief) has {pools[0].get('replica_count')} replicas, not 1")
    for i, pool in enumerate(pools):
        pool_image = pool.get("container_spec", {}).get("image_uri")
        if pool_image != image:
            problems.append(f"{where}: pool {i} runs image {pool_image!r}, not the executor's {image!r}")
        machine = pool.get("machine_spec", {})
        accelerator = machine.get("accelerator_type")
        if accelerator and accelerator not in VERTEX_ACCELERATORS:
            problems.append(f"{where}: pool {i} accelerator {accelerator!r} is not valid on Vertex AI "
                            f"(one of {', '.join(sorted(VERTEX_ACCELERATORS))})")
        family = VERTEX_MACHINE_FAMILY.get(accelerator or "")
        if family and not str(machine.get("machine_type", "")).startswith(family):
            problems.append(f"{where}: pool {i} machine {machine.get('machine_type')!r} cannot carry "
                            f"{accelerator} (a {family}* machine type can)")
    return problems


def vertex_job_problems(where: str, config: dict[str, Any], image: str) -> list[str]:
    problems = []
    if config.get(VERTEX.ENABLE_VERTEX_KEY) is not True:
        problems.append(f"{where}: custom_config lacks {VERTEX.ENABLE_VERTEX_KEY}: true")
    if _unset(config.get(VERTEX.VERTEX_REGION_KEY)):
        problems.append(f"{where}: {VERTEX.VERTEX_REGION_KEY} {config.get(VERTEX.VERTEX_REGION_KEY)!r} is not a region")
    args = config.get(VERTEX.TRAINING_ARGS_KEY) or {}
    if _unset(args.get("project")):
        problems.append(f"{where}: {VERTEX.TRAINING_ARGS_KEY} project {args.get('project')!r} is not a project")
    pools = args.get("job_spec", {}).get("worker_pool_specs")
    return problems + _vertex_pool_problems(where, pools, image)


def kubeflow_job_problems(where: str, config: dict[str, Any], image: str, run_fn: Any,
                          s3_root: bool) -> list[str]:
    """The job the step will create, rendered from its compiled settings (which JobSettings checks: a
    known kind, a TrainJob's runtime): the kind its trainer's framework needs, the executor's image in
    every replica."""
    try:
        settings = job.JobSettings.from_dict(config.get(job.JOB_KEY) or {})
    except (TypeError, ValueError) as e:
        return [f"{where}: custom_config {job.JOB_KEY} is not a training job: {e}"]
    manifest = job.render(settings, "presubmit", settings.namespace or "default", ["python"])
    problems = [f"{where}: the {settings.kind}'s replicas run image {replica_image!r}, not the executor's {image!r}"
                for replica_image in sorted(set(job.replica_images(manifest))) if replica_image != image]
    expected = next((job.KIND_OF_FRAMEWORK[framework] for framework, path in TRAINERS.items() if path == run_fn), None)
    if expected and settings.kind != expected:
        problems.append(f"{where}: run_fn {run_fn} trains with {expected}'s environment, not {settings.kind}'s")
    accelerators = set(settings.resources.get("limits", {})) & KUBEFLOW_ACCELERATORS
    if accelerators and not settings.node_selector:
        problems.append(f"{where}: the replicas request {', '.join(sorted(accelerators))} but have no node selector")
    if s3_root and not settings.secret_env:
        problems.append(f"{where}: the pipeline root is an S3 store but the replicas get no secret with its keys "
                        "(kfp_object_store_secret)")
    return problems


def training_job_problems(package: Package, target: str, values: list[tuple[str, str, Any]],
                          root: str | None) -> list[str]:
    """Each multi-worker trainer step: its job's replicas consistent with the package, its target's."""
    params = {(task_id, name): value for task_id, name, value in values}
    problems = []
    for task_id in package.tasks:
        label = package.executor_label(task_id)
        container = package.executors.get(label, {}).get("container", {})
        executor_class = _flag([str(a) for a in container.get("args", [])], "executor_class_path")
        if executor_class not in (VERTEX_EXECUTOR, KUBEFLOW_EXECUTOR):
            continue
        where = f"task {task_id}"
        wanted = "vertex" if executor_class == VERTEX_EXECUTOR else "kubeflow"
        if target != wanted:
            problems.append(f"{where}: a multi-worker trainer compiled for {wanted}, not {target}; recompile with "
                            f"kfp_target {target}")
            continue
        if container.get("resources", {}).get("accelerator"):
            problems.append(f"{where}: the step only launches its job but requests an accelerator; its replicas "
                            "carry it")
        try:
            config = json.loads(params.get((task_id, "custom_config")) or "{}")
        except (TypeError, ValueError):
            config = {}
        image = container.get("image", "")
        if wanted == "vertex":
            problems += vertex_job_problems(where, config, image)
        else:
            problems += kubeflow_job_problems(where, config, image, params.get((task_id, "run_fn")),
                                              bool(root and root.startswith(("s3://", "minio://"))))
    return problems


def _job_settings(package: Package) -> dict[str, dict[str, Any]]:
    """The compiled job settings of each Kubeflow multi-worker trainer step (its custom_config constant)."""
    found = {}
    for task_id, task in package.tasks.items():
        constant = task.get("inputs", {}).get("parameters", {}).get("custom_config", {}).get("runtimeValue", {})
        try:
            settings = json.loads(constant.get("constant") or "{}").get(job.JOB_KEY)
        except (AttributeError, TypeError, ValueError):
            continue
        if isinstance(settings, dict):
            found[task_id] = settings
    return found


def job_operator_notes(package: Package) -> list[str]:
    """What each Kubeflow trainer job needs installed, which no check here can see: a TrainJob, Trainer
    v2 and its runtime; a TFJob, the v1 training operator beside it (v2 has no TensorFlow runtime)."""
    notes = []
    for task_id, settings in sorted(_job_settings(package).items()):
        if settings.get("kind") == job.TRAIN_JOB.name:
            notes.append(f"task {task_id}: its TrainJob needs Kubeflow Trainer v2 (>= v2.2) and its "
                         f"{job.RUNTIME_KIND} {settings.get('runtime')!r} on the cluster")
        elif settings.get("kind") == job.TF_JOB.name:
            notes.append(f"task {task_id}: its TFJob is the v1 training operator's (kubeflow.org/v1, release-1.9), "
                         "since Kubeflow Trainer v2 has no TensorFlow runtime: the cluster needs that operator "
                         "beside Trainer v2")
    return notes


def cluster_warnings(package: Package) -> list[str]:
    """A remote Beam runner starts the image as its SDK container: that needs Beam's boot entrypoint,
    which only the image built with infra/Dockerfile.beam-sdk has; no check here can see inside it.
    A Kubeflow trainer job needs its operator, which no check here can see either."""
    runners = set(_runners(package).values()) - set(DIRECT_RUNNERS)
    images = sorted({e.get("container", {}).get("image", "") for e in package.executors.values()})
    warnings = [f"Beam runner {runner}: the workers start {', '.join(images)} as the SDK container; it must be "
                "built with infra/build_beam_sdk_image.sh (Beam's /opt/apache/beam/boot entrypoint)"
                for runner in sorted(runners)]
    root = package.spec.get("defaultPipelineRoot") or ""
    if "PortableRunner" in runners and root.startswith(("s3://", "minio://")):
        warnings.append(f"Beam runner PortableRunner with the pipeline root {root!r}: the Flink workers' SDK "
                        "containers get none of the step's AWS_* variables; give the Flink task managers the "
                        "store's keys, or use a gs:// root")
    return warnings + job_operator_notes(package)
