"""Two worker processes of one study against a real PostgreSQL server: one budget between them, the
budget lock in the server, each trial run once; the study's database is its own, never MLflow's."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import psycopg2
import pytest
from optuna.trial import TrialState

from components.tuner import budget, study, worker
from components.tuner.study_test import make_plan, trials_of


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    """A fresh PostgreSQL cluster on 127.0.0.1 with the databases `optuna` (the studies') and `mlflow`
    (a tracking store's): (libpq URI of a database without its password, the password)."""
    from infra import services

    with services.postgres(tmp_path_factory.mktemp("postgres"), database="optuna") as uri:
        parts = urlsplit(uri)
        with contextlib.closing(psycopg2.connect(uri)) as connection:
            connection.autocommit = True
            connection.cursor().execute("CREATE DATABASE mlflow")
        yield f"postgresql://{parts.username}@{parts.hostname}:{parts.port}", parts.password


def test_two_worker_processes_share_one_study_and_its_budget(small_examples, postgres_server, monkeypatch):
    server, password = postgres_server
    monkeypatch.setenv("PGPASSWORD", password)  # as the tuner's tasks get it from a secret
    plan = make_plan(small_examples, f"{server}/optuna", trials=6, epochs=1, examples=256)
    study.refuse_shared_database(plan.storage_url)
    execution = worker.run_workers(plan, processes=2, cores=2)
    assert execution["failed_workers"] == []
    trials = trials_of(plan)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6  # the budget's 6 epochs, not 6 per worker
    assert budget.spent(trials) == plan.budget.total
    workers = {t.user_attrs[study.WORKER] for t in trials}
    assert len(workers) == 2, workers  # both processes ran trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no point sampled twice


def test_the_registry_database_is_never_a_study_storage(postgres_server, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    server, password = postgres_server
    monkeypatch.setenv("PGPASSWORD", password)
    SqlAlchemyStore(f"{server}/mlflow", "/tmp/unused-artifacts")  # MLflow's own schema, as its server makes it
    with pytest.raises(ValueError, match="is an MLflow tracking store"):
        study.refuse_shared_database(f"{server}/mlflow")
