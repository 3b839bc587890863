"""Running a compiled package's tasks here, each once its dependencies have finished, the way the
KFP v2 launcher runs each container: the executor's command and arguments from the package, the
executor-input JSON filled with artifact URIs and parameter values, each output's metadata passed
to its consumers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from pipelines import model_keys
from pipelines.config import REPO_ROOT
from pipelines.kubeflow.package import IMAGE_PROJECT_DIR, Package, PackageError

KFP_TYPES_DIR = REPO_ROOT / "infra" / "kfp_types"


def ready_tasks(package: Package, done: set[str], started: set[str]) -> list[str]:
    """The tasks not yet started whose dependencies have all finished, by name."""
    return sorted(t for t, task in package.tasks.items()
                  if t not in started and set(task.get("dependentTasks", [])) <= done)


def task_order(package: Package) -> list[str]:
    """Tasks in dependency order (ties by name, so every launch runs them in the same order)."""
    order: list[str] = []
    while len(order) < len(package.tasks):
        ready = ready_tasks(package, set(order), set(order))
        if not ready:
            pending = sorted(set(package.tasks) - set(order))
            raise PackageError(f"{package.path}: the tasks {pending} depend on each other in a cycle")
        order += ready
    return order


def in_checkout(value: Any) -> Any:
    """A path inside the image, mapped onto this checkout (the image copies it to /pipeline)."""
    if isinstance(value, str) and value.startswith(IMAGE_PROJECT_DIR + "/"):
        return str(REPO_ROOT) + value[len(IMAGE_PROJECT_DIR):]
    return value


def executor_input(package: Package, task_id: str, produced: dict[tuple[str, str], dict],
                   parameters: dict[str, Any], task_root: str, in_image: bool = False,
                   output_file: str = "") -> dict[str, Any]:
    """The executor-input JSON the launcher passes as `{{$}}`: input artifacts as their producers
    left them, parameter values, fresh output artifact URIs under `task_root` (a folder, or an
    s3:// or minio:// prefix) and the executor output file (a local file of the task's pod)."""
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
    if not in_image:  # the checkout stands in for the image's /pipeline
        values = {k: in_checkout(v) for k, v in values.items()}
    return {"inputs": {"artifacts": artifacts, "parameterValues": values},
            "outputs": {"artifacts": outputs, "outputFile": output_file or f"{task_root}/executor_output.json"}}


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


@dataclasses.dataclass(frozen=True)
class Container:
    """Run each task in a fresh container of `image` (as the image's user, its own code, no source
    tree): only the writable `shared` folders (a local artifact store, the executor output files)
    and the read-only `mounts` are shared with it; the environment variables named in `env` (the
    object store's endpoint and keys, as a Kubernetes secret gives them) are passed by name."""

    image: str
    mounts: tuple[str, ...] = ()

    def command(self, shared: list[str], env: list[str] = ()) -> list[str]:
        volumes = [f"--volume={d}:{d}" for d in shared] + [f"--volume={m}:{m}:ro" for m in self.mounts]
        return ["docker", "run", "--rm", "--network=host", *volumes, *(f"--env={name}" for name in env), self.image]


def container_command(package: Package, task_id: str, invocation: dict[str, Any],
                      container: Container | None = None, shared: list[str] = (),
                      env: list[str] = ()) -> list[str]:
    """The executor container's command and arguments exactly as in the package, `{{$}}` filled:
    inside a fresh container of the image, or (no `container`) by this venv's python."""
    spec = package.executors[package.executor_label(task_id)]["container"]
    args = [json.dumps(invocation) if arg == "{{$}}" else arg for arg in spec["args"]]
    if container is not None:
        return container.command(list(shared), list(env)) + spec["command"] + args
    return [sys.executable if part == "python" else part for part in spec["command"]] + args


class _Running(NamedTuple):
    invocation: dict[str, Any]
    scratch: Path
    started: float  # time.monotonic()
    process: subprocess.Popen


class TaskFailed(RuntimeError):
    """A launched task exited non-zero; `outputs` holds what the tasks before it produced."""

    def __init__(self, message: str, task_id: str, outputs: dict[str, dict]):
        super().__init__(message)
        self.task_id, self.outputs = task_id, outputs


def _by_name(produced: dict[tuple[str, str], dict]) -> dict[str, dict]:
    return {f"{task}/{key}": artifact for (task, key), artifact in produced.items()}


def _image_pythonpath() -> str:
    """The image's PYTHONPATH (infra/Dockerfile), with the checkout standing in for /pipeline."""
    return os.pathsep.join([str(REPO_ROOT), str(KFP_TYPES_DIR)])


def _open_to_the_image_user(root: str) -> None:
    # The image runs as its own non-root user; the artifact store must be writable by it. Tasks
    # running meanwhile may remove what the walk found (their temporary files).
    for folder, _dirs, files in os.walk(root):
        for path, mode in ((folder, 0o777), *((os.path.join(folder, name), 0o666) for name in files)):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, mode)


# What the cluster's secrets hold: a task gets only those its package names from a secret (the
# pusher the signing key, the tasks that load a registered version the verify key, the tuner tasks
# and a PostgreSQL registry lock the database password), as on the cluster.
SECRET_VARIABLES = ("MNIST_MODEL_SIGNING_KEY", "MNIST_MODEL_SIGNING_KEY_FILE", "MNIST_MODEL_VERIFY_KEY",
                       "MNIST_MODEL_VERIFY_KEY_FILE", "PGPASSWORD")


def task_environment(package: Package, task_id: str, environment: dict[str, str]) -> dict[str, str]:
    """`environment` without the secret variables that `task_id`'s secrets do not name."""
    label = package.executor_label(task_id)
    named = {m.get("envVar") for secret in package.kubernetes_executors.get(label, {}).get("secretAsEnv", [])
             for m in secret.get("keyToEnv", [])}
    return {k: v for k, v in environment.items() if k not in SECRET_VARIABLES or k in named}


def default_parallelism() -> int:
    """As many tasks at once as this machine has cores (KFP itself runs every ready task at once)."""
    return max(1, os.cpu_count() or 1)


def launch_locally(path: str | Path, run_root: str | Path, parameters: dict[str, Any] | None = None,
                   log: Any = sys.stderr, container: Container | None = None, scratch: str | Path | None = None,
                   environment: dict[str, str] | None = None, parallelism: int | None = None) -> dict[str, dict]:
    """Runs every task of the compiled package once its dependencies have finished, each in its own
    process (or its own container of the image), the way the KFP v2 launcher runs each container:
    up to `parallelism` tasks at once (default: one per core; 1 runs them one after another).
    Returns the output artifacts by task/key, each with the task's wall time in `seconds`.

    `run_root`: the artifact store, a local folder or an s3:// or minio:// prefix (then
    `environment` holds the store's endpoint and keys). The secrets' variables (SECRET_VARIABLES:
    the model-signing keys, PGPASSWORD) come from `environment`, else this process's environment
    (key files read into PEM text), and each task gets only those its package's secrets name.
    `scratch`: a local folder for what stays in a pod (each task's executor output file
    and log); default: `run_root` when local. A failed task stops the launch of new ones; those
    already running finish, and TaskFailed names the first that failed."""
    run_root = str(run_root)
    remote = "://" in run_root
    if remote and scratch is None:
        raise ValueError(f"run root {run_root} is an object store: give a local scratch folder for the task logs")
    scratch = Path(scratch or run_root)
    package = Package.read(path)
    task_order(package)  # a cycle is refused before anything runs
    values = {name: p.get("defaultValue") for name, p in package.root_parameters.items()}
    values.update(parameters or {})
    shared = list(dict.fromkeys([str(scratch)] + ([] if remote else [run_root])))  # one volume per folder
    produced: dict[tuple[str, str], dict] = {}
    secrets = model_keys.key_environment(os.environ)  # key files as PEM text: a container cannot read them
    inherited = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}

    def start(task_id: str) -> _Running:
        task_scratch = scratch / task_id
        task_scratch.mkdir(parents=True, exist_ok=True)
        invocation = executor_input(package, task_id, produced, values, f"{run_root}/{task_id}",
                                    in_image=container is not None,
                                    output_file=str(task_scratch / "executor_output.json"))
        if not remote:
            make_output_dirs(invocation)
        if container is not None:
            for folder in shared:
                _open_to_the_image_user(folder)
        print(f"launch: {task_id}", file=log, flush=True)
        given = task_environment(package, task_id, {**secrets, **(environment or {})})
        command = container_command(package, task_id, invocation, container, shared, sorted(given))
        with open(task_scratch / "log.txt", "w", encoding="utf-8") as task_log:
            process = subprocess.Popen(command, stdout=task_log, stderr=subprocess.STDOUT,
                                       env={**inherited, **given, "PYTHONPATH": _image_pythonpath()})
        return _Running(invocation, task_scratch, time.monotonic(), process)

    running: dict[str, _Running] = {}
    done: set[str] = set()
    failure: TaskFailed | None = None
    limit = max(1, parallelism or default_parallelism())
    try:
        while True:
            if failure is None:
                for task_id in ready_tasks(package, done, set(running) | done)[:limit - len(running)]:
                    running[task_id] = start(task_id)
            if not running:
                break
            task_id, returncode = _wait_for_any({t: r.process for t, r in running.items()})
            invocation, task_scratch, started, _ = running.pop(task_id)
            seconds = round(time.monotonic() - started, 1)
            print(f"launch: {task_id} exited {returncode} after {seconds} s", file=log, flush=True)
            if returncode != 0:
                if failure is None:  # the first to fail is the one named; `outputs` completed below
                    failure = TaskFailed(f"{path}: task {task_id} exited with {returncode}; its log: "
                                         f"{task_scratch}/log.txt", task_id, {})
                continue
            result = json.loads(Path(invocation["outputs"]["outputFile"]).read_text())
            for key, declared in invocation["outputs"]["artifacts"].items():
                written = result.get("artifacts", {}).get(key, {}).get("artifacts", [])
                # The executor's record (with its properties) when it wrote one, else the declared one.
                produced[(task_id, key)] = {**declared["artifacts"][0], **(written[0] if written else {}),
                                            "seconds": seconds}
            done.add(task_id)
    finally:  # interrupted (Ctrl-C, an error here): no task outlives the launch
        for launched in running.values():
            launched.process.kill()
            launched.process.wait()
    if failure is not None:
        failure.outputs = _by_name(produced)  # what every task that finished produced
        raise failure
    return _by_name(produced)


def _wait_for_any(processes: dict[str, subprocess.Popen], poll_s: float = 0.1) -> tuple[str, int]:
    """The first of `processes` to exit (by name), and its exit status."""
    while True:
        for task_id, process in sorted(processes.items()):
            if process.poll() is not None:
                return task_id, process.returncode
        time.sleep(poll_s)


def launch_summary(outputs: dict[str, dict], run_root: str, registry_uri: str, scratch: str) -> dict[str, Any]:
    """The summary `make run` prints (pipelines/summary.py), for a launched package: read from the
    tasks' output artifacts instead of a local metadata store."""
    from components import artifacts, object_store
    from pipelines import summary

    evaluation_dir = object_store.to_s3(outputs["BakeoffEvaluator/evaluation"]["uri"])
    pushed = outputs.get("RegistryPusher/pushed_model", {}).get("metadata", {})
    drift = outputs.get("DriftValidator/drift_anomalies", {}).get("metadata", {})
    return {
        "run_id": f"launch of {run_root}",
        **summary.decision_summary(summary.read_evaluation(evaluation_dir), evaluation_dir),
        "data_review": drift.get(artifacts.REVIEW_HTML),
        "artifacts": run_root,
        "metadata": f"{scratch} (each task's log and executor output; no ML Metadata store outside a cluster)",
        "registry": registry_uri,
        "registered_version": pushed.get("registered_version") or None,
        "promoted": bool(pushed.get("champion")), "push_reason": pushed.get("reason", ""),
        "stage_seconds": {key.partition("/")[0]: artifact["seconds"] for key, artifact in outputs.items()},
    }
