"""Where a study lives and who may change it: its storage (an Optuna RDB storage in a database of
its own), its name (what it tunes, on which data, in which space and budget), the lock its workers
take to reserve budget, and the trials whose worker is gone.

- Storage: `postgresql://USER@HOST:PORT/DB` (password from PGPASSWORD, as libpq reads it), its own
  database on the registry's PostgreSQL server, or `sqlite:////abs/path.db` for one machine. Optuna
  and MLflow both keep Alembic's `alembic_version` table, so a database that holds MLflow's tables
  is refused.
- Name: `<pipeline>-<framework>-<12 hex>` of the study's identity; the same identity (same data,
  space, budget, settings, trainer code) finds the same study, which a rerun resumes or reuses,
  and anything changed names a new one.
- Lock: a PostgreSQL session advisory lock per study (the server drops it with a dead worker's
  connection), or a file lock beside the SQLite file.
- Orphans: a running trial whose worker died is failed, with the epochs it finished counted: by the
  heartbeat Optuna records for every running trial (any machine), at once when the worker was a
  process of this machine that no longer exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from components import locks

# pg_advisory_lock(key1, key2): key1 says "a tuning study's budget", key2 the study.
ADVISORY_LOCK_CLASS = 0x74756E65  # "tune"
SCHEMA_LOCK = "optuna schema"  # the lock name of creating the storage's tables
WORKER = "worker"  # user attribute: host:pid:process start time of the worker running the trial
ERROR = "error"
# MLflow's tables: a database that has them is the tracking store's, never a study's.
MLFLOW_TABLES = {"experiments", "runs", "registered_models"}
PRUNERS = ("median", "hyperband", "none")


def storage_url(uri: str) -> str:
    """The SQLAlchemy URL of a storage setting, checked: PostgreSQL (psycopg2) or an absolute SQLite file."""
    if uri.startswith(("postgresql://", "postgresql+psycopg2://")):
        if "@" in uri and ":" in uri.split("://", 1)[1].split("@", 1)[0]:
            raise ValueError("the tuning storage URI holds a password: give it in PGPASSWORD instead")
        return uri
    if uri.startswith("sqlite:////"):
        return uri
    raise ValueError(f"tuning storage {uri!r} is neither postgresql://USER@HOST:PORT/DB nor sqlite:////ABSOLUTE/PATH")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def refuse_shared_database(url: str) -> None:
    """A study's storage is a database of its own: not the MLflow tracking store's (both keep an
    alembic_version table, and each would read the other's migrations as its own)."""
    import sqlalchemy

    if url.startswith("sqlite:////") and not os.path.exists(url[len("sqlite:///"):]):
        return
    engine = sqlalchemy.create_engine(url)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if MLFLOW_TABLES <= tables:
        raise ValueError(f"tuning storage {url} is an MLflow tracking store (it has MLflow's tables): give the "
                         "study a database of its own on that server (e.g. CREATE DATABASE optuna), never MLflow's")


def open_storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats: a trial not heard from for 3 intervals is stale."""
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(url[len("sqlite:///"):]), exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # several local workers write to one file
    else:
        engine = {"pool_pre_ping": True}
    # Optuna creates its tables when a storage is first opened: workers starting together (the tasks
    # of both frameworks' studies) would race to create them, so they take turns.
    with study_lock(url, SCHEMA_LOCK), warnings.catch_warnings():  # heartbeats are "experimental" since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                          grace_period=3 * heartbeat_s)


def study_name(prefix: str, framework: str, identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}-{framework}-{digest[:12]}"


@contextlib.contextmanager
def study_lock(url: str, name: str) -> Iterator[None]:
    """Held by a worker around reading the study's trials and reserving budget for a new one."""
    if url.startswith("sqlite:///"):
        with locks.file_lock(url[len("sqlite:///"):] + ".lock"):
            yield
        return
    import psycopg2

    with locks.advisory_lock(psycopg2.connect(_libpq(url), connect_timeout=10), ADVISORY_LOCK_CLASS, name):
        yield


def make_sampler(seed: int, trials: int, worker_index: int) -> optuna.samplers.TPESampler:
    """TPE, after a few random trials; each worker its own seed (the same seed would have two workers
    draw the same random points), and the constant liar so that parallel workers do not sample
    next to each other's running trials."""
    return optuna.samplers.TPESampler(seed=seed + worker_index, n_startup_trials=max(2, trials // 3),
                                      multivariate=True, constant_liar=True)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """median: stop a trial whose eval accuracy after an epoch is below the median of the finished
    trials' at that epoch (once 3 trials finished); hyperband: successive halving over 1..epochs."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune_pruner {name!r} is not one of {PRUNERS}")


def open_study(storage: optuna.storages.RDBStorage, url: str, name: str, sampler, pruner,
               identity: dict[str, Any], baseline: dict[str, Any] | None) -> optuna.Study:
    """The study `name`, created with the untuned settings as its first trial when it is new."""
    with study_lock(url, name):
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                    direction="maximize", load_if_exists=True)
        if not study.get_trials(deepcopy=False):
            study.set_user_attr("identity", identity)
            if baseline is not None:
                study.enqueue_trial(baseline, user_attrs={"baseline": True})
    return study


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): a pid reused by another process differs."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def worker_is_gone(worker: str) -> bool:
    """True when `worker` was a process of this machine that no longer runs."""
    host, _, rest = worker.partition(":")
    pid, _, ticks = rest.partition(":")
    return host == socket.gethostname() and pid.isdigit() and _start_ticks(int(pid)) != ticks


def fail_orphans(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Fails the running trials whose worker is gone (heartbeat stale, or a dead local process);
    returns their numbers. What they finished stays counted (budget.used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
    failed = sorted(before - {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))})
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_is_gone(trial.user_attrs.get(WORKER, "")):
            if _fail(storage, trial, "its worker process ended without finishing it"):
                failed.append(trial.number)
    if failed:
        logging.getLogger(__name__).warning("study %s: trials %s failed, their workers gone", study.study_name, failed)
    return failed


def _fail(storage: optuna.storages.RDBStorage, trial: FrozenTrial, why: str) -> bool:
    # FrozenTrial keeps its storage id private; the storage's API takes it.
    try:
        storage.set_trial_user_attr(trial._trial_id, ERROR, why)
        return storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
        return False
