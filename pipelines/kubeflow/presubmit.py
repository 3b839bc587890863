"""The pre-submit check: everything that would make a compiled package fail or misbehave on its
target (Kubeflow Pipelines or Vertex AI), one sentence per problem, before a cluster sees it.

In order: each step's container (image, paths, registry, accelerators, the champion's keys); what
runs beyond a step's own container: multi-worker trainer steps (a Vertex AI CustomJob through
TFX's extension; on Kubeflow a Trainer v2 TrainJob for PyTorch or a v1 TFJob for Keras, since
Trainer v2 has no TensorFlow runtime) and the Beam steps' runner (Direct, Dataflow, Flink through
the portable runner); the tuning step (components/tuner: each framework's N tuner tasks, fixed at
compile time, are one study sharing a PostgreSQL database of its own, its password from a
secret, and the framework's trainers wait for all N and train with task 0's best values); then
presubmit_problems and presubmit_warnings, which run them all."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from tfx import v1 as tfx

from components.training_job import executor as training_job_executor
from components.training_job import job
from pipelines import validation
from pipelines.config import REPO_ROOT, same_database
from pipelines.kubeflow import entrypoint
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
from pipelines.kubeflow.training_jobs import VERTEX_MACHINE_FAMILY
from pipelines.pipeline import CHAMPION_RESOLVER, TRAINERS

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


# --- what runs beyond a step's own container: multi-worker trainers, the Beam runner -------------

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


# --- the tuning step ----------------------------------------------------------------------------

TUNER_EXECUTOR = "components.tuner.executor.Executor"
# Parameters a tuner task may differ in from its study's other tasks.
PER_TASK = ("task_index",)


def _constants(task: dict[str, Any]) -> dict[str, Any]:
    params = task.get("inputs", {}).get("parameters", {})
    return {name: p.get("runtimeValue", {}).get("constant", p.get("componentInputParameter"))
            for name, p in params.items()}


def tuner_tasks(package: Package) -> dict[str, list[tuple[int, str]]]:
    """framework -> (task index, task id) of every task that runs the tuner's executor, by index."""
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for task_id, task in sorted(package.tasks.items()):
        container = package.executors[package.executor_label(task_id)].get("container", {})
        if any(TUNER_EXECUTOR in str(arg) for arg in container.get("args", [])):
            values = _constants(task)
            found[str(values.get("framework"))].append((int(values.get("task_index") or 0), task_id))
    return {framework: sorted(tasks) for framework, tasks in found.items()}


def _lock_database(package: Package) -> str:
    pusher = package.tasks.get("RegistryPusher")
    return str(_constants(pusher).get("registry_lock_uri") or "") if pusher else ""


def _study_problems(framework: str, tasks: list[tuple[int, str]], package: Package) -> list[str]:
    problems = []
    indices = [index for index, _ in tasks]
    if indices != list(range(len(tasks))):
        problems.append(f"{framework}'s tuner tasks have the task indices {indices}, not 0..{len(tasks) - 1}: "
                        "the study's first task writes its runs and its trainer's values")
    studies = {task_id: {k: v for k, v in _constants(package.tasks[task_id]).items() if k not in PER_TASK}
               for _, task_id in tasks}
    first = next(iter(studies.values()))
    for task_id, values in studies.items():
        differing = sorted(k for k in set(first) | set(values) if first.get(k) != values.get(k))
        if differing:
            problems.append(f"task {task_id} differs from its study's other tuner tasks in {differing}: they would "
                            "run different studies with different budgets; recompile")
    storage = str(first.get("storage_uri") or "")
    if not storage.startswith(("postgresql://", "postgresql+psycopg2://")):
        problems.append(f"{framework}'s tuner tasks keep their study in {storage!r}: on a cluster each pod would have "
                        "its own; use a PostgreSQL database (kfp_tune_storage_uri)")
    elif same_database(storage, _lock_database(package)):
        problems.append(f"{framework}'s study storage is the registry's database: Optuna and MLflow both keep an "
                        "alembic_version table; give the studies a database of their own (kfp_tune_storage_uri)")
    return problems


def _trainer_problems(framework: str, tasks: list[tuple[int, str]], package: Package) -> list[str]:
    problems = []
    first, ids = tasks[0][1], {task_id for _, task_id in tasks}
    trainers = [t for t, task in package.tasks.items()
                if task.get("inputs", {}).get("artifacts", {}).get("hyperparameters", {})
                .get("taskOutputArtifact", {}).get("producerTask") in ids]
    if not trainers:
        problems.append(f"no trainer takes {framework}'s tuned values: recompile")
    for trainer in trainers:
        producer = package.tasks[trainer]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"]
        if producer["producerTask"] != first:
            problems.append(f"task {trainer} takes its hyperparameters from {producer['producerTask']}, not from its "
                            f"study's first task {first}")
        missing = sorted(ids - set(package.tasks[trainer].get("dependentTasks", [])))
        if missing:
            problems.append(f"task {trainer} does not wait for the tuner tasks {missing}: it could train before "
                            "their study has ended")
    return problems


def tuning_problems(package: Package, target: str) -> list[str]:
    """Everything that would make the package's tuning run other than one study per framework."""
    problems = []
    for framework, tasks in sorted(tuner_tasks(package).items()):
        problems += _study_problems(framework, tasks, package) + _trainer_problems(framework, tasks, package)
        for _, task_id in tasks if target == "kubeflow" else ():
            given = {m["envVar"] for secret in package.kubernetes_executors.get(package.executor_label(task_id), {})
                     .get("secretAsEnv", []) for m in secret.get("keyToEnv", [])}
            if "PGPASSWORD" not in given:
                problems.append(f"task {task_id} gets no PGPASSWORD from a secret (kfp_tune_storage_secret): it "
                                "cannot open its study's storage")
    return problems


# --- the whole check ----------------------------------------------------------------------------

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
        problems += beam_problems(label, container)
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
    problems += training_job_problems(package, target, values, root)
    problems += beam_root_problems(package, root)
    problems.append(_pipeline_root_problem(root, target))
    problems += _object_store_problems(package, root, target)
    problems += champion_problems(package, target)
    problems += tuning_problems(package, target)
    return [f"{path}: {p}" for p in problems if p]


def presubmit_warnings(path: str | Path) -> list[str]:
    """What a package needs of the cluster that it cannot check itself: the GPU nodes' driver, the
    Beam SDK entrypoint in the image of a remote runner."""
    package = Package.read(path)
    warnings = [f"{path}: {w}" for w in cluster_warnings(package)]
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
