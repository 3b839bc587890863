"""OptunaTuner's executor: one framework's study (components/tuner/study.py), its workers run here
(worker.py), then its best values and record written out (results.py) and, by the study's first
task, logged to MLflow (tracking.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import examples as examples_lib
from components.tuner import budget as budget_lib
from components.tuner import results, space, study, tracking, worker
from trainers import common
from trainers.config import TrainConfig
from trainers.trial import TrialData

EXAMPLES, SCHEMA = "examples", "schema"
BEST_HYPERPARAMETERS, TUNER_RESULTS = "best_hyperparameters", "tuner_results"
FRAMEWORK, TRIAL_FN, CUSTOM_CONFIG, SPACE = "framework", "trial_fn", "custom_config", "space"
TRIALS, EPOCHS, TRIAL_EXAMPLES, PRUNER = "trials", "epochs", "examples_per_trial", "pruner"
PROCESSES, TASK_INDEX = "processes", "task_index"
STORAGE_URI, STUDY_PREFIX, HEARTBEAT_S = "storage_uri", "study_prefix", "heartbeat_s"
REGISTRY_URI, MODEL_NAME = "registry_uri", "registered_model_name"
# The one untuned setting a trial does not use: the final training's epochs (a trial has the budget's).
NOT_IN_IDENTITY = ("epochs",)
progress = logging.getLogger("components.progress")


def data_identity(examples: types.Artifact) -> dict[str, Any]:
    """What the trials train and are scored on: the ingested files' digests and the split sizes.
    A re-ingest of the same files (a new artifact) is the same data."""
    return {"source_sha256": examples.get_string_custom_property("source_sha256"),
            "split_counts": examples_lib.split_counts(examples), "class_names": examples_lib.class_names(examples)}


def make_plan(properties: dict[str, Any], data: TrialData, data_id: dict[str, Any], train_count: int) -> worker.Plan:
    """The study's plan from the component's properties and the data: its identity, and so its
    name, from everything a trial's outcome depends on."""
    custom_config = json.loads(properties.get(CUSTOM_CONFIG) or "{}")
    base = TrainConfig.from_custom_config(custom_config)
    dims = space.from_json(properties[SPACE])
    per_trial = min(int(properties[TRIAL_EXAMPLES]) or train_count, train_count)
    budget = budget_lib.Budget(int(properties[TRIALS]), int(properties[EPOCHS]), per_trial)
    settings = {k: v for k, v in base.as_custom_config().items() if k not in NOT_IN_IDENTITY}
    identity = {"framework": properties[FRAMEWORK], "trial_fn": properties[TRIAL_FN], "space": space.to_json(dims),
                "budget": budget.to_dict(), "pruner": properties.get(PRUNER) or "median", "settings": settings,
                "code_version": custom_config.get("code_version", ""), "data": data_id}
    return worker.Plan(
        storage_url=study.storage_url(properties[STORAGE_URI]),
        study_name=study.study_name(properties.get(STUDY_PREFIX) or "tuning", properties[FRAMEWORK], identity),
        framework=properties[FRAMEWORK], trial_fn=properties[TRIAL_FN], space_json=space.to_json(dims),
        base_config=base.as_custom_config(), budget=budget,
        data=dataclasses.replace(data, examples=per_trial, epochs=budget.epochs),
        identity=identity, pruner=properties.get(PRUNER) or "median", seed=base.seed,
        heartbeat_s=int(properties.get(HEARTBEAT_S) or 30), baseline=space.point_of(base, dims))


def summary_line(record: dict[str, Any]) -> str:
    counts, best = record["counts"], record["best"]
    return (f"{record['framework']} study {record['study']}: {'reused, ' if record['reused'] else ''}"
            f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed; "
            f"{record['spent']} of {record['budget']['total']} training examples spent; best trial "
            f"{best['number']} eval accuracy {best['value']:.4f} {best['params']}")


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES])
        schema = input_dict.get(SCHEMA)
        data = TrialData(train_files=[examples_lib.split_pattern(examples, "train")],
                         eval_files=[examples_lib.split_pattern(examples, "eval")], examples=0, epochs=1,
                         schema_path=io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(schema))
                         if schema else None,
                         class_names=tuple(examples_lib.class_names(examples)))
        plan = make_plan(exec_properties, data, data_identity(examples), examples_lib.split_counts(examples)["train"])
        study.refuse_shared_database(plan.storage_url)
        processes, task = int(exec_properties.get(PROCESSES) or 1), int(exec_properties.get(TASK_INDEX) or 0)
        progress.info("tuning %s: study %s in %s, %d worker process(es) here", plan.framework, plan.study_name,
                      plan.storage_url, processes)
        started = time.monotonic()
        execution = worker.run_workers(plan, processes, first_index=task * processes, cores=common.container_cores())
        opened, _ = worker.open_plan_study(plan, task * processes)
        record = results.tuning_record(opened, plan, execution, time.monotonic() - started)
        if task == 0 and exec_properties.get(REGISTRY_URI):  # one writer of the study's runs
            run_id = (self._context.pipeline_run_id if self._context else "") or ""
            record["tracking"] = tracking.log_study(exec_properties[REGISTRY_URI], exec_properties[MODEL_NAME],
                                                    record, run_id)
        results.write_outputs(artifact_utils.get_single_uri(output_dict[BEST_HYPERPARAMETERS]),
                              artifact_utils.get_single_uri(output_dict[TUNER_RESULTS]), record)
        progress.info(summary_line(record))
        logging.info("OptunaTuner wrote %s", os.path.join(artifact_utils.get_single_uri(output_dict[TUNER_RESULTS]),
                                                            results.TUNING_FILE))
