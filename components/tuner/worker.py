"""A study's workers: each reserves budget under the study's lock, samples a point of the space,
trains it with the framework's trial entry point (trainers/*_trainer.tune_trial), reports each
epoch's eval accuracy to the pruner, and tells the study how the trial ended (complete, pruned or
failed), until the budget holds no further epoch and no trial of the study is running.

Any number of workers, in one process, in several processes of one machine, or in several
Kubeflow tasks, share one study through its storage: none runs a fixed number of trials.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
import warnings
from typing import Any

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState
from tfx.utils import import_utils

from components.tuner import budget as budget_lib
from components.tuner import space as space_lib
from components.tuner import study as study_lib
from trainers.config import TrainConfig
from trainers.trial import TrialData

OBJECTIVE = "val_accuracy"  # of the trial's last epoch, on the eval split


def _ask(study: optuna.Study) -> optuna.Trial:
    # Optuna warns that heartbeats are meant for study.optimize: the workers ask and tell (to reserve
    # budget under a lock first) and run optimize's own heartbeat thread around each trial.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask()
progress = logging.getLogger("components.progress")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What every worker of one study needs; picklable, as it crosses into spawned processes."""

    storage_url: str
    study_name: str
    framework: str
    trial_fn: str  # the trainer's trial entry point, e.g. trainers.torch_trainer.tune_trial
    space_json: str
    base_config: dict[str, Any]  # the untuned TrainConfig, as a Trainer's custom_config
    budget: budget_lib.Budget
    data: TrialData
    identity: dict[str, Any]
    pruner: str = "median"
    seed: int = 42
    heartbeat_s: int = 30
    baseline: dict[str, Any] | None = None
    poll_s: float = 2.0  # how often a worker with no budget left looks whether running trials ended

    @property
    def space(self) -> space_lib.Space:
        return space_lib.from_json(self.space_json)


def open_plan_study(plan: Plan, worker_index: int) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = study_lib.open_storage(plan.storage_url, plan.heartbeat_s)
    study = study_lib.open_study(storage, plan.storage_url, plan.study_name,
                                 study_lib.make_sampler(plan.seed, plan.budget.trials, worker_index),
                                 study_lib.make_pruner(plan.pruner, plan.budget.epochs), plan.identity, plan.baseline)
    return study, storage


# What reserve says when it starts no trial.
STUDY_DONE = "the budget holds no further epoch and no trial runs"
OTHERS_RUNNING = "the budget is reserved by running trials, which may leave some (pruned or failed)"


def reserve(study: optuna.Study, storage: optuna.storages.RDBStorage, plan: Plan) -> optuna.Trial | str:
    """Under the study's lock: a new trial with its share of the budget, or STUDY_DONE, or
    OTHERS_RUNNING (another worker's trial may yet be pruned and leave budget)."""
    with study_lib.study_lock(plan.storage_url, plan.study_name):
        study_lib.fail_orphans(study, storage)
        trials = study.get_trials(deepcopy=False)
        epochs = budget_lib.epochs_for_next_trial(plan.budget, trials)
        if not epochs:
            return OTHERS_RUNNING if any(t.state == TrialState.RUNNING for t in trials) else STUDY_DONE
        trial = _ask(study)
        for key, value in {**budget_lib.reservation(epochs, plan.budget.examples),
                           study_lib.WORKER: study_lib.worker_id()}.items():
            trial.set_user_attr(key, value)
        return trial


def run_trial(study: optuna.Study, trial: optuna.Trial, plan: Plan, trial_fn) -> TrialState:
    """One trial, to its end: complete (its objective), pruned (the epochs it ran count) or failed
    (recorded with its error; the study goes on)."""
    values = space_lib.suggest(trial, plan.space)
    epochs = trial.user_attrs[budget_lib.EPOCHS]
    pruned = False
    shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())

    def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        nonlocal pruned
        trial.report(metrics[OBJECTIVE], epoch)
        trial.set_user_attr(budget_lib.EPOCHS_RUN, epoch)
        # After the last epoch the trial is finished, not pruned.
        pruned = epoch < epochs and trial.should_prune()
        progress.info("%s trial %d epoch %d/%d: eval accuracy %.4f%s", plan.framework, trial.number, epoch, epochs,
                      metrics[OBJECTIVE], " -> pruned" if pruned else "")
        return not pruned

    progress.info("%s trial %d (%d epochs): %s", plan.framework, trial.number, epochs, shown)
    try:
        cfg = TrainConfig.from_custom_config(plan.base_config, values)
        result = trial_fn(cfg, dataclasses.replace(plan.data, epochs=epochs), on_epoch)
    except Exception as e:  # a crashed trial is one failed point of the search, not the end of it
        logging.getLogger(__name__).warning("%s trial %d failed", plan.framework, trial.number, exc_info=True)
        trial.set_user_attr(study_lib.ERROR, f"{type(e).__name__}: {e}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    trial.set_user_attr("result", {k: v for k, v in result.to_dict().items() if k != "history"})
    trial.set_user_attr("history", result.history)
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    study.tell(trial, result.history[OBJECTIVE][-1])
    return TrialState.COMPLETE


def run_worker(plan: Plan, worker_index: int = 0) -> int:
    """Trials until the study is done; returns how many this worker ran."""
    study, storage = open_plan_study(plan, worker_index)
    trial_fn = import_utils.import_func_from_module(*plan.trial_fn.rsplit(".", 1))
    ran = 0
    while True:
        trial = reserve(study, storage, plan)
        if trial == STUDY_DONE:
            return ran
        if trial == OTHERS_RUNNING:
            time.sleep(plan.poll_s)
            continue
        # ask/tell has no heartbeat of its own (study.optimize starts this same thread per trial).
        with get_heartbeat_thread(trial._trial_id, storage):
            run_trial(study, trial, plan, trial_fn)
        ran += 1


def _worker_process(plan: Plan, worker_index: int, threads: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(dataclasses.replace(plan, data=dataclasses.replace(plan.data, threads=threads)), worker_index)


def run_workers(plan: Plan, processes: int, first_index: int = 0, cores: int = 1) -> dict[str, Any]:
    """`processes` workers of the study: this process alone, or that many fresh processes sharing
    the machine's `cores`. A worker process that dies is reported; the others finish the study
    (its running trial is failed, its finished ones kept)."""
    started = time.time()
    if processes == 1:
        run_worker(plan, first_index)
        return {"workers": 1, "failed_workers": [], "started": started}
    context = multiprocessing.get_context("spawn")  # TensorFlow and PyTorch do not survive a fork
    threads = max(1, cores // processes)
    workers = [context.Process(target=_worker_process, args=(plan, first_index + i, threads),
                               name=f"{plan.framework}-tuner-{first_index + i}") for i in range(processes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        logging.getLogger(__name__).warning("tuner workers %s exited with errors; the others finished the study",
                                            failed)
    study, storage = open_plan_study(plan, first_index)
    study_lib.fail_orphans(study, storage)
    return {"workers": processes, "failed_workers": failed, "started": started}
