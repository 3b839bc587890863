"""Kubeflow / Vertex AI side of the pipeline: what the compile adds after TFX, the pre-submit
check, deploy, and a local launch of the compiled package.

python -m pipelines.kubeflow presubmit [pipeline.yaml] --target kubeflow|vertex [--pipeline-root URI]
python -m pipelines.kubeflow deploy kubeflow --host URL [--run] [--param NAME=VALUE ...]
python -m pipelines.kubeflow deploy vertex --project P --region R --pipeline-root gs://... [--param ...]
python -m pipelines.kubeflow launch [pipeline.yaml] --run-root DIR [--param NAME=VALUE ...]

TFX's KubeflowV2DagRunner writes the accelerator request (ResourceSpec) but no node selector or
toleration, so `post_compile` adds them as the second YAML document of the package, in the form
kfp-kubernetes writes (`kfp.kubernetes.add_node_selector`, `add_toleration`):
platforms.kubernetes.deploymentSpec.executors.<executor label>.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pipelines import validation
from pipelines.config import REPO_ROOT, PipelineConfig

# Where the image (infra/Dockerfile) puts the project; compiled paths point inside the image.
IMAGE_PROJECT_DIR = "/pipeline"
# Absolute paths a task may name: the project inside the image, and container scratch space.
CONTAINER_PATH_PREFIXES = (IMAGE_PROJECT_DIR + "/", "/tmp/")

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
VERTEX_ACCELERATORS = frozenset({*GKE_TO_VERTEX_ACCELERATOR.values(), "TPU_V2", "TPU_V3"})
# A registry a pod can reach: an MLflow tracking server, or Databricks' hosted one.
REMOTE_REGISTRY = re.compile(r"^(https?://|databricks)")
# TFX executors write artifacts through tf.io.gfile: gs:// works in the image; s3:// and minio://
# would need tensorflow-io, which the image does not have.
REMOTE_PIPELINE_ROOT = {"kubeflow": ("gs://",), "vertex": ("gs://",)}
PLACEHOLDER_BUCKET = "YOUR-BUCKET"
# Prefixes that can only mean the machine that compiled the package.
LOCAL_PATH = re.compile(r"(^|[\s'\"=])(/home/|/Users/|/root/|file://|sqlite:|[A-Za-z]:\\)")
# The pipeline parameter holding the trainers' custom_config (JSON); see runners.submit_time_parameters.
TRAINER_CONFIG_PARAMETER = "trainer_config"


class PackageError(ValueError):
    """A compiled package that cannot be read or placed; the message names the file."""


# --- trainer placement ------------------------------------------------------------------------
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


# --- reading and writing a package -------------------------------------------------------------
@dataclasses.dataclass
class Package:
    """A compiled KFP v2 package: its header comments, pipeline spec and platform spec."""

    path: str
    header: str
    spec: dict[str, Any]
    platform: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> Package:
        path = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            raise PackageError(f"{path}: cannot read the package: {e}") from e
        if not 1 <= len(documents) <= 2 or not all(isinstance(d, dict) for d in documents):
            raise PackageError(f"{path}: expected a pipeline spec and at most one platform spec "
                               f"(YAML mappings), found {len(documents)} document(s)")
        # The "# PIPELINE DEFINITION" comment block the compilers write above the spec.
        header = "".join(itertools.takewhile(lambda line: line.startswith("#"),
                                             text.splitlines(keepends=True)))
        return cls(path, header, documents[0], documents[1] if len(documents) == 2 else {})

    def write(self) -> None:
        documents = [self.spec] + ([self.platform] if self.platform else [])
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(self.header)
            # The same dump as KubeflowV2DagRunner and kfp's compiler, so the diff is only ours.
            yaml.dump_all(documents, f, sort_keys=True)

    @property
    def tasks(self) -> dict[str, Any]:
        return self.spec.get("root", {}).get("dag", {}).get("tasks", {})

    @property
    def executors(self) -> dict[str, Any]:
        return self.spec.get("deploymentSpec", {}).get("executors", {})

    @property
    def kubernetes_executors(self) -> dict[str, Any]:
        return (self.platform.get("platforms", {}).get("kubernetes", {})
                .get("deploymentSpec", {}).get("executors", {}))

    @property
    def root_parameters(self) -> dict[str, Any]:
        return self.spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})

    def executor_label(self, task_id: str) -> str:
        task = self.tasks.get(task_id)
        if task is None:
            raise PackageError(f"{self.path}: no task {task_id!r} (tasks: {sorted(self.tasks)})")
        component = self.spec["components"][task["componentRef"]["name"]]
        return component["executorLabel"]


def set_parameter_defaults(package: Package, defaults: dict[str, Any]) -> None:
    declared = package.root_parameters
    missing = sorted(set(defaults) - set(declared))
    if missing:
        raise PackageError(f"{package.path}: the compiled pipeline lacks the parameters {missing}")
    for name, value in defaults.items():
        declared[name]["defaultValue"] = value
        declared[name]["isOptional"] = True


def place_trainers(package: Package, cfg: PipelineConfig, trainer_ids: Iterable[str]) -> None:
    """Each trainer's node selector and tolerations in the Kubernetes platform section (nothing
    for the other tasks, no section at all when there is nothing to place)."""
    config = trainer_kubernetes_config(cfg)
    if config:
        executors = {package.executor_label(task_id): json.loads(json.dumps(config))
                     for task_id in trainer_ids}
        package.platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}


def post_compile(path: str, cfg: PipelineConfig, trainer_ids: Iterable[str],
                 parameter_defaults: dict[str, Any]) -> None:
    """What TFX's compiler leaves out of the package: the pipeline root, the parameters' defaults
    (both live in the run config, which its YAML writer drops) and the trainers' placement."""
    package = Package.read(path)
    package.spec["defaultPipelineRoot"] = cfg.kfp_pipeline_root
    set_parameter_defaults(package, parameter_defaults)
    place_trainers(package, cfg, trainer_ids)
    package.write()


# --- pre-submit check ----------------------------------------------------------------------------
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
        accelerator = container.get("resources", {}).get("accelerator")
        if accelerator:
            problems += _accelerator_problems(package, label, accelerator, target)
    for label in package.kubernetes_executors:
        if label not in package.executors:
            problems.append(f"kubernetes platform section names executor {label!r}, which the package lacks")
    if target == "vertex" and package.platform:
        problems.append("the package has a kubernetes platform section, which Vertex AI does not apply; "
                        "compile with kfp_target: vertex")
    for task_id, name, value in _parameter_values(package, parameters or {}):
        problems.append(_local_path_problem(task_id, name, value))
        if name == "registry_uri":
            problems.append(_registry_problem(task_id, value))
    problems.append(_pipeline_root_problem(pipeline_root or package.spec.get("defaultPipelineRoot"), target))
    return [f"{path}: {p}" for p in problems if p]


# --- deploy ----------------------------------------------------------------------------------------
PARAMETER_TYPES = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str, "INT": int, "DOUBLE": float,
                   "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()]}
PYTHON_TYPES = {int: "INT", float: "DOUBLE", str: "STRING", bool: "BOOLEAN"}


def _typed(name: str, raw: str, kind: str) -> Any:
    try:
        return PARAMETER_TYPES.get(kind, str)(raw)
    except (ValueError, KeyError) as e:
        raise ValueError(f"--param {name}: {raw!r} is not a {kind}") from e


def _trainer_defaults(package: Package) -> dict[str, Any]:
    default = package.root_parameters.get(TRAINER_CONFIG_PARAMETER, {}).get("defaultValue")
    return json.loads(default) if default else {}


def parse_parameters(pairs: list[str], package: Package) -> dict[str, Any]:
    """NAME=VALUE pairs, typed by the package's pipeline parameters. A trainer setting (epochs,
    batch_size, ...) edits the trainer_config parameter's JSON; any other name is an error."""
    declared, trainer_defaults = package.root_parameters, _trainer_defaults(package)
    values: dict[str, Any] = {}
    trainer_settings: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        if name in declared:
            kind = declared[name].get("parameterType") or declared[name].get("type", "STRING")
            values[name] = _typed(name, raw, kind)
        elif name in trainer_defaults:
            trainer_settings[name] = _typed(name, raw, PYTHON_TYPES[type(trainer_defaults[name])])
        else:
            takes = sorted(declared) + sorted(trainer_defaults)
            raise ValueError(f"{package.path}: the pipeline has no parameter {name!r} "
                             f"(it takes: {', '.join(takes) or 'none'})")
    if trainer_settings:
        base = json.loads(values.get(TRAINER_CONFIG_PARAMETER, json.dumps(trainer_defaults)))
        values[TRAINER_CONFIG_PARAMETER] = json.dumps({**base, **trainer_settings}, sort_keys=True)
    return values


def code_revision(repo: Path = REPO_ROOT) -> str:
    """The revision the image and the package were built from (the same tag build_image.sh uses)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    revision = git("rev-parse", "--short=12", "HEAD")
    return revision + ("-dirty" if git("status", "--porcelain") else "")


@dataclasses.dataclass
class Deployment:
    """What one deploy does, built from the flags before anything is contacted."""

    package: str
    pipeline_name: str
    version_name: str
    parameters: dict[str, Any]
    pipeline_root: str | None
    run: bool
    run_name: str
    experiment: str
    enable_caching: bool


def build_deployment(args: argparse.Namespace) -> Deployment:
    package = Package.read(args.package)
    version = args.version or code_revision()
    return Deployment(
        package=args.package,
        pipeline_name=args.pipeline_name or package.spec.get("pipelineInfo", {}).get("name", "pipeline"),
        version_name=version, parameters=parse_parameters(args.param or [], package),
        pipeline_root=args.pipeline_root, run=args.run, run_name=args.run_name or f"run-{version}",
        experiment=args.experiment, enable_caching=not args.no_cache)


def deploy_kubeflow(d: Deployment, client: Any) -> dict[str, str]:
    """Uploads the package as a new version of `d.pipeline_name` (the pipeline is created on the
    first upload), then optionally starts a run of that version."""
    pipeline_id = client.get_pipeline_id(d.pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(d.package, pipeline_name=d.pipeline_name)
        pipeline_id = pipeline.pipeline_id
    version = client.upload_pipeline_version(d.package, pipeline_version_name=d.version_name,
                                             pipeline_id=pipeline_id)
    result = {"pipeline_id": pipeline_id, "version_id": version.pipeline_version_id}
    if d.run:
        experiment = client.create_experiment(d.experiment)
        run = client.run_pipeline(experiment.experiment_id, d.run_name, pipeline_id=pipeline_id,
                                  version_id=version.pipeline_version_id, params=d.parameters,
                                  pipeline_root=d.pipeline_root, enable_caching=d.enable_caching)
        result["run_id"] = run.run_id
    return result


def vertex_job_arguments(d: Deployment, project: str, region: str) -> dict[str, Any]:
    """Keyword arguments of google.cloud.aiplatform.PipelineJob for this deployment."""
    return {"display_name": d.run_name, "template_path": d.package, "pipeline_root": d.pipeline_root,
            "parameter_values": d.parameters, "enable_caching": d.enable_caching,
            "project": project, "location": region,
            "labels": {"code-revision": re.sub(r"[^a-z0-9_-]", "-", d.version_name.lower())}}


def deploy_vertex(d: Deployment, project: str, region: str, service_account: str | None) -> str:
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(**vertex_job_arguments(d, project, region))
    job.submit(service_account=service_account)
    return job.resource_name


# --- local launch: run the package's tasks the way the KFP v2 launcher would ------------------------
def task_order(package: Package) -> list[str]:
    """Tasks in dependency order (ties by name, so every launch runs them in the same order)."""
    pending = {t: set(task.get("dependentTasks", [])) for t, task in package.tasks.items()}
    order: list[str] = []
    while pending:
        ready = sorted(t for t, deps in pending.items() if not deps - set(order))
        if not ready:
            raise PackageError(f"{package.path}: the tasks {sorted(pending)} depend on each other in a cycle")
        order += ready
        for t in ready:
            del pending[t]
    return order


def in_checkout(value: Any) -> Any:
    """A path inside the image, mapped onto this checkout (the image copies it to /pipeline)."""
    if isinstance(value, str) and value.startswith(IMAGE_PROJECT_DIR + "/"):
        return str(REPO_ROOT) + value[len(IMAGE_PROJECT_DIR):]
    return value


def executor_input(package: Package, task_id: str, produced: dict[tuple[str, str], dict],
                   parameters: dict[str, Any], task_root: str) -> dict[str, Any]:
    """The executor-input JSON the launcher passes as `{{$}}`: input artifacts as their producers
    left them, parameter values, fresh output artifact URIs and the executor output file."""
    task = package.tasks[task_id]
    component = package.spec["components"][task["componentRef"]["name"]]
    artifacts = {name: {"artifacts": [produced[(ref["taskOutputArtifact"]["producerTask"],
                                                ref["taskOutputArtifact"]["outputArtifactKey"])]]}
                 for name, ref in task.get("inputs", {}).get("artifacts", {}).items()}
    values = {}
    for name, param in task.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in param:
            values[name] = parameters[param["componentInputParameter"]]
        else:
            values[name] = param["runtimeValue"]["constant"]
    outputs = {name: {"artifacts": [{"name": f"{task_id}/{name}", "type": output["artifactType"],
                                     "uri": f"{task_root}/{name}", "metadata": {}}]}
               for name, output in component.get("outputDefinitions", {}).get("artifacts", {}).items()}
    return {"inputs": {"artifacts": artifacts, "parameterValues": {k: in_checkout(v) for k, v in values.items()}},
            "outputs": {"artifacts": outputs, "outputFile": f"{task_root}/executor_output.json"}}


def make_output_dirs(invocation: dict[str, Any]) -> None:
    """Local stand-in for object storage, where any path can be written: a folder at each output
    URI, or only its parent for value artifacts (written as one file at the URI), as TFX's own
    launcher does for local runs."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.types import value_artifact
    from tfx.utils import import_utils

    if str(KFP_TYPES_DIR) not in sys.path:  # as on the image's PYTHONPATH: the `system` module
        sys.path.append(str(KFP_TYPES_DIR))
    for output in invocation["outputs"]["artifacts"].values():
        artifact = output["artifacts"][0]
        title = yaml.safe_load(artifact["type"]["instanceSchema"]).get("title", "")
        try:
            cls = import_utils.import_class_by_path(compiler_utils.TITLE_TO_CLASS_PATH.get(title, title))
        except ImportError:  # the task itself will fail on it, naming the type
            cls = None
        is_file = cls is not None and issubclass(cls, value_artifact.ValueArtifact)
        (Path(artifact["uri"]).parent if is_file else Path(artifact["uri"])).mkdir(parents=True, exist_ok=True)


def container_command(package: Package, task_id: str, invocation: dict[str, Any]) -> list[str]:
    """The executor container's command and arguments, `{{$}}` filled, run by this venv's python."""
    container = package.executors[package.executor_label(task_id)]["container"]
    command = [sys.executable if part == "python" else part for part in container["command"]]
    return command + [json.dumps(invocation) if arg == "{{$}}" else arg for arg in container["args"]]


class TaskFailed(RuntimeError):
    """A launched task exited non-zero; `outputs` holds what the tasks before it produced."""

    def __init__(self, message: str, task_id: str, outputs: dict[str, dict]):
        super().__init__(message)
        self.task_id, self.outputs = task_id, outputs


def _by_name(produced: dict[tuple[str, str], dict]) -> dict[str, dict]:
    return {f"{task}/{key}": artifact for (task, key), artifact in produced.items()}


KFP_TYPES_DIR = REPO_ROOT / "infra" / "kfp_types"


def _image_pythonpath() -> str:
    """The image's PYTHONPATH (infra/Dockerfile), with the checkout standing in for /pipeline."""
    return os.pathsep.join([str(REPO_ROOT), str(KFP_TYPES_DIR)])


def launch_locally(path: str | Path, run_root: str | Path, parameters: dict[str, Any] | None = None,
                   log: Any = sys.stderr) -> dict[str, dict]:
    """Runs every task of the compiled package in dependency order, each in its own process, the
    way the KFP v2 launcher runs each container; returns the output artifacts by task/key."""
    package = Package.read(path)
    values = {name: p.get("defaultValue") for name, p in package.root_parameters.items()}
    values.update(parameters or {})
    produced: dict[tuple[str, str], dict] = {}
    for task_id in task_order(package):
        task_root = f"{run_root}/{task_id}"
        invocation = executor_input(package, task_id, produced, values, task_root)
        Path(task_root).mkdir(parents=True, exist_ok=True)
        make_output_dirs(invocation)
        print(f"launch: {task_id}", file=log, flush=True)
        with open(f"{task_root}/log.txt", "w", encoding="utf-8") as task_log:
            done = subprocess.run(container_command(package, task_id, invocation), stdout=task_log,
                                  stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": _image_pythonpath()})
        if done.returncode != 0:
            raise TaskFailed(f"{path}: task {task_id} exited with {done.returncode}; its log: {task_root}/log.txt",
                             task_id, _by_name(produced))
        result = json.loads(Path(invocation["outputs"]["outputFile"]).read_text())
        for key, declared in invocation["outputs"]["artifacts"].items():
            written = result.get("artifacts", {}).get(key, {}).get("artifacts", [])
            # The executor's record (with its properties) when it wrote one, else the declared one.
            produced[(task_id, key)] = {**declared["artifacts"][0], **(written[0] if written else {})}
    return _by_name(produced)


# --- command line -------------------------------------------------------------------------------------
def _add_deploy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package", default=str(REPO_ROOT / "pipeline.yaml"))
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="run parameter (repeat)")
    p.add_argument("--pipeline-root", help="artifact root of the run (default: the package's)")
    p.add_argument("--run-name")
    p.add_argument("--no-cache", action="store_true", help="run every task, reuse no cached result")
    p.add_argument("--skip-presubmit", action="store_true")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipelines.kubeflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("presubmit", help="lint a compiled package for its target")
    check.add_argument("package", nargs="?", default=str(REPO_ROOT / "pipeline.yaml"))
    check.add_argument("--target", choices=("kubeflow", "vertex"), default="kubeflow")
    check.add_argument("--pipeline-root", help="the pipeline root the run will be given")
    launch = sub.add_parser("launch", help="run the package's tasks here, as the KFP v2 launcher would")
    launch.add_argument("package", nargs="?", default=str(REPO_ROOT / "pipeline.yaml"))
    launch.add_argument("--run-root", required=True, help="folder for the task outputs and logs")
    launch.add_argument("--param", action="append", metavar="NAME=VALUE", help="run parameter (repeat)")
    deploy = sub.add_parser("deploy", help="upload pipeline.yaml and optionally run it")
    targets = deploy.add_subparsers(dest="target", required=True)
    kfp_p = targets.add_parser("kubeflow", help="open-source Kubeflow Pipelines (kfp.Client)")
    kfp_p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    kfp_p.add_argument("--namespace", default="kubeflow")
    kfp_p.add_argument("--pipeline-name", help="default: the package's pipeline name")
    kfp_p.add_argument("--version", help="pipeline version name (default: the code revision)")
    kfp_p.add_argument("--run", action="store_true", help="start a run of the uploaded version")
    kfp_p.add_argument("--experiment", default="mnist-bakeoff")
    _add_deploy_flags(kfp_p)
    vtx = targets.add_parser("vertex", help="Vertex AI Pipelines (aiplatform.PipelineJob)")
    vtx.add_argument("--project", required=True)
    vtx.add_argument("--region", required=True)
    vtx.add_argument("--service-account")
    _add_deploy_flags(vtx)
    vtx.set_defaults(run=True, version=None, pipeline_name=None, experiment="")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "presubmit":
        problems = presubmit_problems(args.package, args.target, pipeline_root=args.pipeline_root)
        print("\n".join(problems) or f"{args.package}: ok for {args.target}")
        return 1 if problems else 0
    if args.command == "launch":
        values = parse_parameters(args.param or [], Package.read(args.package))
        print(json.dumps(launch_locally(args.package, os.path.abspath(args.run_root), values), indent=2))
        return 0
    deployment = build_deployment(args)
    if not args.skip_presubmit:
        problems = presubmit_problems(deployment.package, args.target, pipeline_root=deployment.pipeline_root,
                                      parameters=deployment.parameters)
        if problems:
            print("\n".join(problems + ["not deployed (--skip-presubmit to deploy anyway)"]), file=sys.stderr)
            return 1
    if args.target == "kubeflow":
        import kfp

        client = kfp.Client(host=args.host, namespace=args.namespace)
        print(json.dumps(deploy_kubeflow(deployment, client), indent=2))
    else:
        print(deploy_vertex(deployment, args.project, args.region, args.service_account))
    return 0


if __name__ == "__main__":
    sys.exit(main())
