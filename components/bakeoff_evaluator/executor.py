"""BakeoffEvaluator's executor: every candidate, and the registry's champion, scored on the same
examples by the same code, in one Beam pipeline; then one decision, and the reviewer's artifacts.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components import artifacts, tracking
from components.bakeoff_evaluator import corruptions, metrics, report, scoring
from components.bakeoff_evaluator.rule import DecisionRule
from components.candidates import is_training_log, run_input
from components.registry import MlflowRegistry
from trainers import common, loader, model_format

EXAMPLES = "examples"
EVALUATION = "evaluation"
BLESSING = "blessing"
REPORT = "report"
SUMMARY = "summary"
METRICS = "metrics"
CLASSIFICATION_METRICS = "classification_metrics"
SPLIT = "split"
REGISTRY_URI = "registry_uri"
MODEL_NAME = "registered_model_name"
CORRUPTIONS_PER_EXAMPLE = "corruptions_per_example"
# 3: the decision rule's fields named as in the config (min_metric, champion_min_delta, champion_alpha).
# 4: statistical ties (decision.statistical_tie, tied_with, winner_versus), paired bootstrap intervals
#    (comparisons[].accuracy_difference[_ci95], bootstrap), the corrupted test copy (robustness,
#    candidates.*.robustness) and the optional gates (decision.gates; rule corruption_max_drop,
#    slice_max_recall_drop).
# 5: several seeds per framework (decision.across_seeds, candidates.*.seed), the default
#    champion_policy significantly_better, candidates.*.training (history, time, examples/s).
# 6: tracking (experiment_id, evaluation_run_id, training_run_ids, tracking_uri) when a registry is
#    given: the bake-off's MLflow runs (components/tracking.py).
FORMAT_VERSION = 6
# The phase the evaluation is in, for whoever follows the run (the local run's terminal shows it).
progress = logging.getLogger("components.progress")


def split_pattern(examples: types.Artifact, split: str) -> str:
    return os.path.join(artifact_utils.get_split_uri([examples], split), "*")


def load_split(examples: types.Artifact, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split, in file order; the first `limit` examples if given."""
    ds = common.make_dataset([split_pattern(examples, split)], 1024, shuffle=False, seed=0, cache=False)
    images, labels, seen = [], [], 0
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
        seen += len(y)
        if limit and seen >= limit:
            break
    images_, labels_ = np.concatenate(images), np.concatenate(labels)
    return (images_[:limit], labels_[:limit]) if limit else (images_, labels_)


def size_on_disk(model_dir: str) -> int:
    return sum(tf.io.gfile.stat(os.path.join(root, f)).length
               for root, _, files in tf.io.gfile.walk(model_dir) for f in files)


def training_record(model_dir: str, meta: dict[str, Any], train_examples: int | None) -> dict[str, Any]:
    """How the model was trained, from what its trainer wrote beside it: per-epoch history, time,
    throughput (training examples per second, its per-epoch validation included), export format."""
    history_path = os.path.join(model_dir, model_format.HISTORY_FILE)
    history = json.loads(model_format.read_bytes(history_path)) if model_format.file_exists(history_path) else {}
    seconds, epochs = meta.get("train_seconds"), meta.get("config", {}).get("epochs")
    return {"history": history, "seconds": seconds, "epochs": epochs, "format": meta.get("format"),
            "examples_per_second": train_examples * epochs / seconds if train_examples and epochs and seconds
            else None}


def describe_candidate(model_dir: str, labels: np.ndarray, probs: np.ndarray,
                       sample: np.ndarray, train_examples: int | None = None) -> dict[str, Any]:
    predict, meta = loader.load_predictor(model_dir)
    return {"framework": meta["framework"], "model": meta["model"], "seed": meta.get("config", {}).get("seed"),
            "parameters": meta["parameters"], "device": meta["device"], "uri": model_dir,
            "size_bytes": size_on_disk(model_dir),
            "metrics": metrics.score(labels, probs),
            "performance": metrics.latency_and_throughput(predict, sample),
            "training": training_record(model_dir, meta, train_examples)}


def training_log_dir(input_dict: dict[str, list[types.Artifact]], candidate: str) -> str | None:
    """The candidate's Trainer logs (TensorBoard events), when the pipeline passed them."""
    logs = input_dict.get(run_input(candidate))
    return logs[0].uri if logs else None


def kfp_classification_metrics(confusion: list[list[int]]) -> dict[str, Any]:
    """The confusion matrix in the form the KFP v2 UI reads from system.ClassificationMetrics."""
    return {"annotationSpecs": [{"displayName": str(d)} for d in range(len(confusion))],
            "rows": [{"row": row} for row in confusion]}


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES])
        split = exec_properties.get(SPLIT) or "test"
        rule = DecisionRule.from_properties(exec_properties)
        out_dir = artifact_utils.get_single_uri(output_dict[EVALUATION])
        model_dirs = {name: os.path.join(artifact_utils.get_single_uri(artifacts), "Format-Serving")
                      for name, artifacts in sorted(input_dict.items())
                      if name != EXAMPLES and not is_training_log(name)}
        if artifacts.CHAMPION in model_dirs:
            raise ValueError(f"'{artifacts.CHAMPION}' is reserved for the registry's champion; rename that candidate")

        champion_version, registry = None, None
        if exec_properties.get(REGISTRY_URI):
            registry = MlflowRegistry(exec_properties[REGISTRY_URI], exec_properties[MODEL_NAME])
            found = registry.download_champion(os.path.join(out_dir, "champion_model"))
            if found:
                champion_version, model_dirs[artifacts.CHAMPION] = found
                logging.info("BakeoffEvaluator: champion is version %s", champion_version.version)

        per_example = exec_properties.get(CORRUPTIONS_PER_EXAMPLE)
        per_example = corruptions.DEFAULT_PER_EXAMPLE if per_example is None else int(per_example)
        scores_path = os.path.join(out_dir, artifacts.SCORES_FILE)
        progress.info("scoring %d models on the %s split and its corrupted copy (one Beam pass)",
                      len(model_dirs), split)
        with self._make_beam_pipeline() as pipeline:
            scoring.score_all(pipeline, split_pattern(examples, split), model_dirs, scores_path, per_example)
        scores = scoring.load(scores_path)

        progress.info("measuring each model's latency and throughput")
        sample, _ = load_split(examples, split, limit=512)  # for latency and throughput
        train_examples = json.loads(examples.get_string_custom_property("split_counts") or "{}").get("train")
        # The champion was trained on data this run may not have: no examples/s for it.
        candidates = {name: describe_candidate(d, scores.labels, scores.probs[name], sample,
                                               None if name == artifacts.CHAMPION else train_examples)
                      for name, d in model_dirs.items()}
        if champion_version is not None:
            candidates[artifacts.CHAMPION]["version"] = champion_version.version
        comparisons = metrics.pairwise_comparisons(
            scores.labels, {n: p.argmax(axis=1) for n, p in scores.probs.items()})
        for name, c in candidates.items():  # None: the suite is off (corruptions_per_example 0)
            c["robustness"] = metrics.corruption_accuracy(
                scores.labels, scores.corrupted_predictions[name], corruptions.NAMES,
                corruptions.NOT_SCORED) if per_example else None
        decision = metrics.decide({n: c["metrics"] for n, c in candidates.items()}, rule,
                                  artifacts.CHAMPION if champion_version else None, comparisons,
                                  robustness={n: c["robustness"]["mean_accuracy"] for n, c in candidates.items()}
                                  if per_example else None,
                                  frameworks={n: c["framework"] for n, c in candidates.items()})
        evaluation = {
            "version": FORMAT_VERSION, "candidates": candidates, "comparisons": comparisons,
            "decision": decision, "bootstrap": metrics.BOOTSTRAP,
            "robustness": {
                "seed": corruptions.SEED, "examples": int(len(scores.labels)), "names": list(corruptions.NAMES),
                "corruptions_per_example": per_example,
                "corrupted_images": int((next(iter(scores.corrupted_predictions.values()))
                                         != corruptions.NOT_SCORED).sum()),
                "corruptions": {c: {"description": corruptions.CORRUPTIONS[c], "sha256": scores.corruption_sha256[c]}
                                for c in corruptions.NAMES},
                "sha256": corruptions.combined_sha256(scores.corruption_sha256),
                "how": "every example of the split under corruptions_per_example of the corruptions (which ones "
                       "and how: from the record and the seed, components/bakeoff_evaluator/corruptions.py), "
                       "made and scored in the scoring step of the same Beam pass that scores the clean examples; "
                       "sha256 per corruption: XOR of each corrupted image's sha256",
            },
            "data": {"split": split, "examples": int(len(scores.labels)),
                     "examples_sha256": scores.examples_sha256, "examples_uri": examples.uri,
                     "source_sha256": json.loads(examples.get_string_custom_property("source_sha256") or "{}")},
        }
        if registry is None:
            self._write_outputs(evaluation, scores, output_dict)
            return
        progress.info("logging the trainings and the evaluation to MLflow")
        runs = tracking.BakeoffTracking(registry, (self._context.pipeline_run_id if self._context else "") or "")
        training_runs = {name: runs.log_training(name, c, model_format.read_model_meta(c["uri"]),
                                                 {k: c["metrics"][k] for k in tracking.HEADLINE_METRICS},
                                                 training_log_dir(input_dict, name))
                         for name, c in candidates.items() if name != artifacts.CHAMPION}
        evaluation_run = runs.start_evaluation(evaluation, training_runs)
        evaluation["tracking"] = {"experiment_id": runs.experiment_id, "evaluation_run_id": evaluation_run,
                                  "training_run_ids": training_runs, "tracking_uri": registry.uri}
        logging.info("BakeoffEvaluator: MLflow runs in experiment %s: evaluation %s, training %s",
                     runs.experiment_id, evaluation_run, training_runs)
        try:
            files = self._write_outputs(evaluation, scores, output_dict)
        except BaseException:
            registry.client.set_terminated(evaluation_run, status="FAILED")
            raise
        runs.finish_evaluation(evaluation_run, files)

    @staticmethod
    def _write_outputs(evaluation: dict[str, Any], scores: scoring.Scores,
                       output_dict: dict[str, list[types.Artifact]]) -> dict[str, str]:
        """Writes the evaluation's files and artifacts; returns the files' texts by name."""
        out_dir = artifact_utils.get_single_uri(output_dict[EVALUATION])
        html = report.render_html(evaluation, report.figures(evaluation, scores))
        markdown = report.render_markdown(evaluation)
        files = {artifacts.EVALUATION_FILE: json.dumps(evaluation, indent=2, sort_keys=True),
                 artifacts.REPORT_FILE: html, artifacts.SUMMARY_FILE: markdown}
        for name, text in files.items():
            with tf.io.gfile.GFile(os.path.join(out_dir, name), "w") as f:
                f.write(text)
        for key, text in ((REPORT, html), (SUMMARY, markdown)):
            if output_dict.get(key):  # KFP UI: the file at the artifact's URI
                with tf.io.gfile.GFile(artifact_utils.get_single_uri(output_dict[key]), "w") as f:
                    f.write(text)

        decision = evaluation["decision"]
        winner = evaluation["candidates"][decision["winner"]]
        if output_dict.get(METRICS):
            kfp_metrics = artifact_utils.get_single_instance(output_dict[METRICS])
            for name, c in evaluation["candidates"].items():
                for key in ("accuracy", "log_loss", "expected_calibration_error"):
                    kfp_metrics.set_float_custom_property(f"{name}.{key}", c["metrics"][key])
                if c["robustness"]:
                    kfp_metrics.set_float_custom_property(f"{name}.corrupted_mean_accuracy",
                                                          c["robustness"]["mean_accuracy"])
        if output_dict.get(CLASSIFICATION_METRICS):
            artifact_utils.get_single_instance(output_dict[CLASSIFICATION_METRICS]).set_json_value_custom_property(
                "confusionMatrix", kfp_classification_metrics(winner["metrics"]["confusion_matrix"]))

        blessing = artifact_utils.get_single_instance(output_dict[BLESSING])
        blessing.set_int_custom_property(artifacts.BLESSED, int(decision["blessed"]))
        blessing.set_string_custom_property(artifacts.WINNER, decision["winner"])
        blessing.set_string_custom_property("winner_framework", winner["framework"])
        blessing.set_float_custom_property("winner_accuracy", winner["metrics"]["accuracy"])
        blessing.set_int_custom_property("statistical_tie", int(decision["statistical_tie"]))
        marker = "BLESSED" if decision["blessed"] else "NOT_BLESSED"
        with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
            f.write("\n".join(decision["reasons"]) + "\n")
        return files
