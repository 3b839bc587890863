"""The pre-submit check of a package's tuning step (components/tuner): each framework's N tuner
tasks, fixed at compile time, must be one study (the same parameters but their task index, indices
0..N-1), share it through a PostgreSQL database of its own (not the registry's, not a pod's local
file), get its password from a secret, and the framework's trainers must wait for all N and train
with task 0's best values."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipelines.config import same_database
from pipelines.kubeflow.package import Package

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
