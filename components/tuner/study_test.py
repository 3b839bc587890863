"""Real Optuna studies over real training (seed_cnn, a few hundred real MNIST images, 1-2 epochs per
trial): the budget rule with a pruned trial, a crashed trial, a killed worker whose study resumes,
a rerun that reuses its study and a changed space or dataset that starts a new one."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from components.tuner import budget, executor, results, space, study, worker
from trainers import torch_trainer
from trainers.config import TrainConfig
from trainers.trial import TrialData

TORCH_TRIAL = "trainers.torch_trainer.tune_trial"
KERAS_TRIAL = "trainers.keras_trainer.tune_trial"
BASE = TrainConfig(model="seed_cnn", batch_size=32, learning_rate=1e-3, lr_schedule="constant", accelerator="cpu",
                   seed=1)
# A small space around the base settings (which lie inside it: the baseline trial).
SPACE = (space.Dimension("learning_rate", 1e-4, 2e-2, log=True), space.Dimension("batch_size", choices=(32, 64)),
         space.Dimension("width", choices=(0.5, 1.0)), space.Dimension("augment_shift", choices=(2,)))
GOOD = {"learning_rate": 1e-2, "batch_size": 32, "width": 1.0, "augment_shift": 2}
# Five steps at a tenth of the base rate: no better than chance after an epoch.
HOPELESS = {"learning_rate": 1e-4, "batch_size": 64, "width": 0.5, "augment_shift": 2}
MARKER_VARIABLE = "TUNER_TEST_MARKER"


def properties(storage_url: str, framework: str = "pytorch", trials: int = 3, epochs: int = 2, examples: int = 320,
               pruner: str = "none", dims: space.Space = SPACE) -> dict:
    return {executor.FRAMEWORK: framework, executor.TRIAL_FN: TORCH_TRIAL if framework == "pytorch" else KERAS_TRIAL,
            executor.CUSTOM_CONFIG: json.dumps(BASE.as_custom_config()), executor.SPACE: space.to_json(dims),
            executor.TRIALS: trials, executor.EPOCHS: epochs, executor.TRIAL_EXAMPLES: examples,
            executor.PRUNER: pruner, executor.STORAGE_URI: storage_url, executor.STUDY_PREFIX: "test"}


def make_plan(artifact, storage_url: str, **changes) -> worker.Plan:
    data = TrialData(train_files=[os.path.join(artifact.uri, "Split-train", "*")],
                     eval_files=[os.path.join(artifact.uri, "Split-eval", "*")], examples=0, epochs=1)
    return executor.make_plan(properties(storage_url, **changes), data, executor.data_identity(artifact), 2700)


def trials_of(plan: worker.Plan) -> list[optuna.trial.FrozenTrial]:
    storage = study.open_storage(plan.storage_url, plan.heartbeat_s)
    return optuna.load_study(study_name=plan.study_name, storage=storage).get_trials()


def enqueue(plan: worker.Plan, *points: dict) -> None:
    opened, _ = worker.open_plan_study(plan, 0)  # creates the study with its baseline trial first
    for point in points:
        opened.enqueue_trial(point)


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}"


# Trial entry points that misbehave on purpose, importable by a worker process.
_calls = {"n": 0}


def crash_in_second_trial(cfg, data, on_epoch):
    """The real trial, except that the second one crashes after its first epoch (an OOM, say)."""
    _calls["n"] += 1
    if _calls["n"] != 2:
        return torch_trainer.tune_trial(cfg, data, on_epoch)

    def crash_after_one(epoch, metrics):
        on_epoch(epoch, metrics)
        raise RuntimeError("CUDA out of memory (forced by the test)")

    return torch_trainer.tune_trial(cfg, data, crash_after_one)


def hang_in_third_trial(cfg, data, on_epoch):
    """The real trial, except that the third one says so in a file and never ends."""
    _calls["n"] += 1
    if _calls["n"] == 3:
        Path(os.environ[MARKER_VARIABLE]).write_text("hanging")
        time.sleep(3600)
    return torch_trainer.tune_trial(cfg, data, on_epoch)


def test_a_pruned_trial_counts_what_it_used_and_leaves_the_rest_to_more_trials(small_examples, storage_url):
    """Budget 4 trials x 2 epochs x 320 examples. Trials 0-2 finish; trial 3 (hopeless) is pruned
    after one epoch by the median of the three; its second epoch's share goes to a fifth trial."""
    plan = make_plan(small_examples, storage_url, trials=4, pruner="median")
    enqueue(plan, GOOD, GOOD | {"batch_size": 64}, HOPELESS)
    worker.run_worker(plan)
    trials = trials_of(plan)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[0].user_attrs["baseline"] and trials[0].params == space.point_of(BASE, SPACE)
    pruned, last = trials[3], trials[4]
    assert pruned.user_attrs[budget.EPOCHS_RUN] == 1 and budget.used(pruned) == 320
    assert pruned.intermediate_values[1] < sorted(t.intermediate_values[1] for t in trials[:3])[1]
    assert last.user_attrs[budget.EPOCHS] == 1  # what was left: one epoch
    assert budget.spent(trials) == plan.budget.total == 4 * 2 * 320
    assert all(space.Dimension("learning_rate", 1e-4, 2e-2, log=True).contains(t.params["learning_rate"])
               for t in trials)


def test_both_frameworks_get_the_same_budget(small_examples, storage_url):
    """One set of settings makes both frameworks' plans: the same budget in training examples, the
    same space; each study spends exactly that, whatever its trials did."""
    plans = {f: make_plan(small_examples, storage_url, framework=f, trials=2, epochs=1, examples=256)
             for f in ("keras", "pytorch")}
    assert plans["keras"].budget == plans["pytorch"].budget and plans["keras"].budget.total == 2 * 256
    assert plans["keras"].space_json == plans["pytorch"].space_json
    assert plans["keras"].study_name != plans["pytorch"].study_name
    for plan in plans.values():
        worker.run_worker(plan)
        trials = trials_of(plan)
        assert budget.spent(trials) == plan.budget.total
        assert all(t.user_attrs[budget.EXAMPLES] == 256 for t in trials)


def test_a_crashed_trial_is_failed_and_the_study_goes_on(small_examples, storage_url):
    _calls["n"] = 0
    plan = dataclasses.replace(make_plan(small_examples, storage_url, trials=3, epochs=2),
                               trial_fn="components.tuner.study_test.crash_in_second_trial")
    worker.run_worker(plan)
    trials = trials_of(plan)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                         TrialState.COMPLETE]
    crashed = trials[1]
    assert "CUDA out of memory (forced by the test)" in crashed.user_attrs[study.ERROR]
    assert budget.used(crashed) == 320  # the epoch it ran before it crashed
    assert trials[3].user_attrs[budget.EPOCHS] == 1 and budget.spent(trials) == plan.budget.total


def test_a_killed_worker_leaves_a_study_that_resumes_with_its_finished_trials(small_examples, storage_url,
                                                                              tmp_path, monkeypatch):
    marker = tmp_path / "hanging"
    monkeypatch.setenv(MARKER_VARIABLE, str(marker))
    plan = make_plan(small_examples, storage_url, trials=4, epochs=1)
    hanging = dataclasses.replace(plan, trial_fn="components.tuner.study_test.hang_in_third_trial")
    process = multiprocessing.get_context("spawn").Process(target=worker.run_worker, args=(hanging,))
    process.start()
    deadline = time.monotonic() + 600
    while not marker.exists() and process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marker.exists(), "the worker never reached its third trial"
    os.kill(process.pid, signal.SIGKILL)  # the tuning run killed mid-trial
    process.join()
    before = trials_of(plan)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]

    worker.run_worker(plan)  # the rerun: the same study, resumed
    after = trials_of(plan)
    assert [(t.number, t.params, t.value) for t in after[:2]] == [(t.number, t.params, t.value) for t in before[:2]]
    assert after[2].state == TrialState.FAIL and "worker process ended" in after[2].user_attrs[study.ERROR]
    assert budget.used(after[2]) == 0  # killed before its first epoch ended: nothing counted
    assert [t.state for t in after[3:]] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert budget.spent(after) == plan.budget.total


def test_a_rerun_reuses_the_study_and_a_changed_space_or_dataset_starts_a_new_one(small_examples, storage_url):
    plan = make_plan(small_examples, storage_url, trials=2, epochs=1, examples=160)
    started = time.time()
    worker.run_worker(plan)
    done = trials_of(plan)
    assert len(done) == 2

    again = make_plan(small_examples, storage_url, trials=2, epochs=1, examples=160)
    assert again.study_name == plan.study_name
    rerun_started = time.time()
    worker.run_worker(again)
    assert [(t.number, t.params, t.value) for t in trials_of(again)] == [(t.number, t.params, t.value) for t in done]
    opened, _ = worker.open_plan_study(again, 0)
    record = results.tuning_record(opened, again, {"workers": 1, "started": rerun_started}, 0.0)
    assert record["reused"] and record["trials_run"] == 0
    assert not results.tuning_record(opened, again, {"workers": 1, "started": started}, 0.0)["reused"]

    narrower = make_plan(small_examples, storage_url, trials=2, epochs=1, examples=160,
                         dims=SPACE[:1] + (space.Dimension("batch_size", choices=(32,)),) + SPACE[2:])
    assert narrower.study_name != plan.study_name
    other_data = executor.make_plan(properties(storage_url, trials=2, epochs=1, examples=160), plan.data,
                                    {**executor.data_identity(small_examples), "split_counts": {"train": 1}}, 2700)
    assert other_data.study_name not in (plan.study_name, narrower.study_name)
    worker.run_worker(narrower)
    assert len(trials_of(narrower)) == 2 and all(t.params["batch_size"] == 32 for t in trials_of(narrower))
    assert len(trials_of(plan)) == 2  # the first study untouched


def test_storage_urls_are_checked(tmp_path):
    assert study.storage_url("postgresql://optuna@db:5432/optuna") == "postgresql://optuna@db:5432/optuna"
    with pytest.raises(ValueError, match="holds a password: give it in PGPASSWORD"):
        study.storage_url("postgresql://optuna:secret@db:5432/optuna")
    with pytest.raises(ValueError, match="neither postgresql"):
        study.storage_url("sqlite:///relative.db")
    # The embedded registry's database is MLflow's: never a study's.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    mlflow_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    SqlAlchemyStore(mlflow_db, str(tmp_path / "artifacts"))
    with pytest.raises(ValueError, match="is an MLflow tracking store"):
        study.refuse_shared_database(mlflow_db)
    study.refuse_shared_database(f"sqlite:///{tmp_path / 'optuna.db'}")  # a new file: fine
