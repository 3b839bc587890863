"""RegistryPusher's executor: registers the blessed winner (signed, with its training data's
statistics and image hashes) and moves the `champion` alias, only if the champion is still the
one the run resolved and the version is not rejected: the registry's one decision rule, under its
alias lock (components/registry.py). Otherwise the version stays registered without the alias,
and both it and the PushedModel artifact record why.

Not blessed: nothing is registered, and the PushedModel artifact records why.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import artifacts, champion, image_checks, tracking
from components import registry as registry_lib

EVALUATION = "evaluation"
BLESSING = "blessing"
STATISTICS = "statistics"
IMAGE_STATISTICS = "image_statistics"  # ImageValidator's: the training images' statistics and fingerprints
CHAMPION = "champion"  # ChampionResolver's model: the champion state the run was judged against
PUSHED_MODEL = "pushed_model"
REGISTRY_URI = "registry_uri"
MODEL_NAME = "registered_model_name"
LOCK_URI = "registry_lock_uri"
# Which code made the model (git revision locally, the image's on a cluster): a tag on the version,
# from the environment, so that it is no part of the pusher's cache key.
CODE_REVISION_VARIABLE = "CODE_REVISION"


def decision_tags(evaluation: dict[str, Any], run_id: str, replaced: str, code_revision: str) -> dict[str, str]:
    """The decision record written on the registered version."""
    d = evaluation["decision"]
    winner = evaluation["candidates"][d["winner"]]
    tags = {
        "framework": winner["framework"], "candidate": d["winner"], "model": winner["model"],
        "accuracy": f"{winner['metrics']['accuracy']:.6f}",
        registry_lib.PRIMARY_VALUE_TAG: repr(float(winner["metrics"][d["rule"]["primary_metric"]])),
        "pipeline_run_id": run_id, "code_revision": code_revision or "unknown",
        "data_sha256": evaluation["data"]["examples_sha256"],
        "data_examples": str(evaluation["data"]["examples"]),
        "source_sha256": json.dumps(evaluation["data"]["source_sha256"], sort_keys=True),
        "decision_rule": json.dumps(d["rule"], sort_keys=True),
        "decision_reasons": " | ".join(d["reasons"]),
        # The winner's lead over the runner-up or the champion is not significant at champion_alpha.
        "statistical_tie": str(d.get("statistical_tie", "unknown")).lower(),
        "evaluated_against_version": evaluation["candidates"].get(artifacts.CHAMPION, {}).get("version", ""),
        "replaced_version": replaced,
    }
    seeds = d.get("across_seeds")
    if seeds:  # several seeds per framework: the frameworks' means and the test between them
        tags["across_seeds"] = json.dumps({
            "winner_framework": seeds["winner"], "test": "welch_t", "versus": seeds["versus"],
            "frameworks": {f: {k: s[k] for k in ("seeds", "mean", "std", "best_model")}
                           for f, s in seeds["frameworks"].items()}}, sort_keys=True)
    for name, c in evaluation["candidates"].items():
        tags[f"metrics.{name}"] = json.dumps({k: c["metrics"][k] for k in (
            "accuracy", "accuracy_ci95", "macro_f1", "log_loss", "expected_calibration_error")}, sort_keys=True)
    for t in evaluation["comparisons"]:
        tags[f"mcnemar.{t['first']}.vs.{t['second']}"] = (
            f"p={t['p_value']:.6g} discordant={t['only_first_correct']}/{t['only_second_correct']}")
    return {key: tracking.fit_tag(value) for key, value in tags.items()}


def tuning_tags(evaluation: dict[str, Any]) -> dict[str, str]:
    """The values the winner was trained with from its framework's study, and the study, when the
    run tuned (evaluation.json's `tuning`, components/tuner)."""
    tuning = evaluation.get("tuning")
    study = tuning and tuning["frameworks"].get(evaluation["candidates"][evaluation["decision"]["winner"]]["framework"])
    if not study:
        return {}
    tags = {"tuned_hyperparameters": json.dumps(study["best"]["params"], sort_keys=True),
            "tuning_study": study["study"], "tuning_best_trial": str(study["best"]["number"]),
            "tuning_best_eval_accuracy": f"{study['best']['value']:.6f}",
            "tuning_budget_examples": str(study["budget"]["total"]), "tuning_spent_examples": str(study["spent"]),
            "tuning_changed_verdict": str(tuning["verdict"]["changed"]).lower(),
            "tuning_verdict": tuning["verdict"]["statement"]}
    return {key: tracking.fit_tag(value) for key, value in tags.items()}


def tracking_tags(evaluation: dict[str, Any]) -> dict[str, str]:
    """The bake-off's runs behind this version: the winner's training run and the evaluation run."""
    runs = evaluation.get("tracking")
    if not runs:
        return {}
    winner = evaluation["decision"]["winner"]
    return {tracking.EVALUATION_RUN_TAG: runs["evaluation_run_id"],
            tracking.TRAINING_RUN_TAG: runs["training_run_ids"].get(winner, ""),
            "bakeoff_experiment_id": runs["experiment_id"]}


def version_description(evaluation: dict[str, Any]) -> str:
    """The version page's text (Markdown): why it won, and links to the runs it came from."""
    decision = evaluation["decision"]
    lines = [f"**{decision['winner']}** won the bake-off.", *(f"- {reason}" for reason in decision["reasons"])]
    runs = evaluation.get("tracking")
    if runs:
        experiment = runs["experiment_id"]
        lines += ["", "Runs: [evaluation](" + tracking.run_link(experiment, runs["evaluation_run_id"]) + ")",
                  *(f"- [{name} training]({tracking.run_link(experiment, run_id)})"
                    for name, run_id in sorted(runs["training_run_ids"].items()))]
    return tracking.fit_tag("\n".join(lines))


class ChampionShiftError(RuntimeError):
    """The data changed under the champion (the evaluation's champion shift alarm, action stop)."""


def shift_alarm(evaluation: dict[str, Any]) -> dict[str, Any]:
    return evaluation["decision"].get("gates", {}).get("champion_shift") or {}


def not_pushed(pushed: types.Artifact, reason: str) -> None:
    pushed.set_int_custom_property("pushed", 0)
    pushed.set_int_custom_property("champion", 0)
    pushed.set_string_custom_property("reason", reason)


def baseline_files(input_dict: dict[str, list[types.Artifact]]) -> dict[str, str]:
    """What later runs judge their data against, registered (signed) with the version: the TFDV
    statistics of the data the model was trained on (the drift baseline) and its training images'
    statistics and fingerprints (image drift, contamination); {name in baseline/: folder}."""
    baseline = {}
    if input_dict.get(STATISTICS):
        baseline[registry_lib.STATISTICS_DIR] = artifact_utils.get_single_uri(input_dict[STATISTICS])
    if input_dict.get(IMAGE_STATISTICS):
        train = image_checks.split_folder(artifact_utils.get_single_uri(input_dict[IMAGE_STATISTICS]),
                                          image_checks.BASELINE_SPLIT)
        baseline[f"{image_checks.CHAMPION_IMAGES_DIR}/{os.path.basename(train)}"] = train
    return baseline


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        blessing = artifact_utils.get_single_instance(input_dict[BLESSING])
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL])
        eval_dir = artifact_utils.get_single_uri(input_dict[EVALUATION])
        with tf.io.gfile.GFile(os.path.join(eval_dir, artifacts.EVALUATION_FILE)) as f:
            evaluation = json.load(f)
        alarm = shift_alarm(evaluation)
        if alarm.get("fired") and alarm.get("action") == "stop":
            fired = next(r for r in evaluation["decision"]["reasons"] if r.startswith("champion shift alarm FIRED"))
            raise ChampionShiftError(f"{fired}; nothing registered (the evaluation: {eval_dir}; to register the "
                                     "challenger for a person to promote instead: shift_alarm_action register)")
        # action register: the challenger the rule would have blessed is registered, never promoted.
        register_only = bool(alarm.get("fired") and alarm.get("blessed_otherwise"))
        if not blessing.get_int_custom_property(artifacts.BLESSED) and not register_only:
            reasons = evaluation["decision"]["reasons"]
            logging.warning("RegistryPusher: not blessed, nothing pushed: %s", "; ".join(reasons))
            not_pushed(pushed, " | ".join(reasons))
            return

        resolved = artifact_utils.get_single_instance(input_dict[CHAMPION])
        registry = registry_lib.MlflowRegistry(exec_properties[REGISTRY_URI], exec_properties[MODEL_NAME],
                                               lock_uri=exec_properties.get(LOCK_URI) or "")
        registry.champion_state()  # a registry that fails stops here, before anything is registered
        winner = evaluation["decision"]["winner"]
        # The winner's own input channel, so lineage in the metadata store names the pushed model.
        model_dir = os.path.join(artifact_utils.get_single_uri(input_dict[winner]), "Format-Serving")
        run_id = (self._context.pipeline_run_id if self._context else "") or ""
        tags = {**decision_tags(evaluation, run_id, "", os.environ.get(CODE_REVISION_VARIABLE, "")),
                **tracking_tags(evaluation), **tuning_tags(evaluation),
                "evaluated_against": champion.identity(resolved)}
        if self._context and self._context.pipeline_node is not None:
            tags["tfx_node_id"] = self._context.pipeline_node.node_info.id
        # ML Metadata ids of what was decided on: lineage from here reaches every execution.
        tags["mlmd_artifact_ids"] = json.dumps({
            "evaluation": input_dict[EVALUATION][0].id, "blessing": blessing.id, "champion": resolved.id,
            "model": input_dict[winner][0].id, "examples_uri": evaluation["data"]["examples_uri"]}, sort_keys=True)
        # A pusher killed after registering leaves a complete version (MLflow creates a version
        # in one call, after the upload): its rerun adopts that version instead of a duplicate.
        tags[registry_lib.SOURCE_MODEL_TAG] = model_dir
        version = registry.find_version(registry_lib.SOURCE_MODEL_TAG, model_dir)
        if version is not None:
            logging.warning("RegistryPusher: %s version %s already holds this model (an earlier push of it, "
                            "or an interrupted attempt of this one): not registering it again", version.name,
                            version.version)
        else:
            # What later runs need from this version travels with it, signed: no path into this run.
            version = registry.register(
                model_dir, evaluation["candidates"][winner]["framework"], tags=tags,
                metrics=tracking.flatten_metrics(evaluation), description=version_description(evaluation),
                files={f"evaluation/{artifacts.EVALUATION_FILE}": os.path.join(eval_dir, artifacts.EVALUATION_FILE),
                       f"evaluation/{artifacts.REPORT_FILE}": os.path.join(eval_dir, artifacts.REPORT_FILE)},
                baseline=baseline_files(input_dict), class_names=evaluation.get("class_names"))
        if register_only:
            reason = ("the data changed under the champion (champion shift alarm, shift_alarm_action register): "
                      f"registered for a person to promote (`python -m pipelines registry promote {version.version}`)")
            registry.set_version_tags(version.version, {registry_lib.NOT_PROMOTED_TAG: reason})
            promotion = registry_lib.Promotion(False, reason, registry.champion_state())
        else:
            promotion = registry.promote_if_unchanged(version, champion.identity(resolved))
        logging.info("RegistryPusher: %s version %s registered; %s", version.name, version.version, promotion.reason)
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_int_custom_property("champion", int(promotion.promoted))
        pushed.set_string_custom_property("reason", promotion.reason)
        pushed.set_string_custom_property("registry_uri", registry.uri)
        pushed.set_string_custom_property("registered_model", version.name)
        pushed.set_string_custom_property("registered_version", version.version)
        pushed.set_string_custom_property("model_source", version.source)
        pushed.set_string_custom_property("pushed_destination", registry.champion_uri())
        with tf.io.gfile.GFile(os.path.join(pushed.uri, "registered.json"), "w") as f:
            f.write(json.dumps({"name": version.name, "version": version.version, "champion": promotion.promoted,
                                "reason": promotion.reason, "alias": registry_lib.CHAMPION_ALIAS,
                                "registry_uri": registry.uri}))
