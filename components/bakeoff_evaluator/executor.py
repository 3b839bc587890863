"""BakeoffEvaluator's executor: every candidate, and the registry's champion, scored on the same
examples by the same code, in one Beam pass; then one decision. What the reviewer reads is made
by modules of its own: the report (report.py), the KFP UI's artifacts (kfp_artifacts.py), the
latency measurement (latency.py) and the bake-off's MLflow runs (components/tracking.py).
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

from components import artifacts, champion, examples, tracking
from components.bakeoff_evaluator import corruptions, decision, kfp_artifacts, latency, metrics, report, scoring
from components.bakeoff_evaluator.rule import DecisionRule
from components.candidates import is_training_log, run_input
from components.registry import MlflowRegistry
from trainers import model_format

EXAMPLES = "examples"
CHAMPION = "champion"  # ChampionResolver's model (through SameChampion), optional
EVALUATION = "evaluation"
BLESSING = "blessing"
REPORT, SUMMARY = kfp_artifacts.REPORT, kfp_artifacts.SUMMARY
METRICS, CLASSIFICATION_METRICS = kfp_artifacts.METRICS, kfp_artifacts.CLASSIFICATION_METRICS
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
# 7: class_names (label i is class_names[i]); per_class and confusion matrices over those classes.
# 8: tuning (each framework's study: budget, spent, best and untuned trials, its trials; the verdict
#    before and after tuning), when the run tuned.
FORMAT_VERSION = 8
# A framework's TunerResults input (components/tuner), named <framework>_tuning, and the record
# its tuner writes there (components/tuner/results.py).
TUNING_SUFFIX = "_tuning"
TUNING_FILE = "tuning.json"
LATENCY_SAMPLE = 512
# The phase the evaluation is in, for whoever follows the run (the local run's terminal shows it).
progress = logging.getLogger("components.progress")


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
                       sample: np.ndarray, train_examples: int | None = None,
                       verified_as: str | None = None) -> dict[str, Any]:
    """One model's entry of evaluation.json: what it is, its metrics, its speed, its training."""
    predict, meta = scoring.load_model(model_dir, verified_as)
    export = champion.exported_model_dir(model_dir) if verified_as else model_dir
    return {"framework": meta["framework"], "model": meta["model"], "seed": meta.get("config", {}).get("seed"),
            "parameters": meta["parameters"], "device": meta["device"], "uri": export,
            "size_bytes": size_on_disk(export),
            "metrics": metrics.score(labels, probs),
            "performance": latency.latency_and_throughput(predict, sample),
            "training": training_record(export, meta, train_examples)}


def tuning_input(framework: str) -> str:
    return framework + TUNING_SUFFIX


def candidate_models(input_dict: dict[str, list[types.Artifact]]) -> dict[str, str]:
    """{candidate name: exported model folder} of every trained Model input."""
    return {name: os.path.join(artifact_utils.get_single_uri(models), "Format-Serving")
            for name, models in sorted(input_dict.items())
            if name not in (EXAMPLES, CHAMPION) and not is_training_log(name) and not name.endswith(TUNING_SUFFIX)}


def tuning_records(input_dict: dict[str, list[types.Artifact]]) -> dict[str, dict[str, Any]]:
    """Each framework's tuning record, by framework (none when the run did not tune)."""
    found = {}
    for name, artifacts_ in sorted(input_dict.items()):
        if name.endswith(TUNING_SUFFIX) and artifacts_:
            with tf.io.gfile.GFile(os.path.join(artifacts_[0].uri, TUNING_FILE)) as f:
                found[name[:-len(TUNING_SUFFIX)]] = json.load(f)
    return found


def _leader(values: dict[str, float | None]) -> str | None:
    known = {f: v for f, v in values.items() if v is not None}
    return max(sorted(known), key=known.get) if len(known) == len(values) > 1 else None


def tuning_summary(records: dict[str, dict[str, Any]], candidates: dict[str, dict[str, Any]],
                   decided: dict[str, Any]) -> dict[str, Any]:
    """evaluation.json's `tuning`: each framework's study (its trials without their histories), and
    the verdict between the frameworks before tuning (their untuned settings' trials, on the eval
    split), in the search (their best trials) and after it (the bake-off's test winner)."""
    keep = ("number", "state", "value", "params", "epochs", "epochs_run", "used", "curve", "baseline", "seconds",
            "error", "worker")
    frameworks = {f: {**{k: v for k, v in r.items() if k not in ("trials", "identity")},
                      "trials": [{k: t.get(k) for k in keep} for t in r["trials"]]} for f, r in records.items()}
    untuned = _leader({f: (r.get("baseline") or {}).get("value") for f, r in records.items()})
    searched = _leader({f: r["best"]["value"] for f, r in records.items()})
    final = candidates[decided["winner"]]["framework"]
    changed = None if untuned is None else untuned != final
    if changed is None:
        statement = (f"tuned, {final} wins the bake-off; no verdict before tuning to compare with (an untuned trial "
                     "is missing or did not finish)")
    else:
        tie = " (a statistical tie on the test split)" if decided.get("statistical_tie") else ""
        statement = (f"tuning {'CHANGED' if changed else 'did not change'} the verdict: with their untuned settings "
                     f"{untuned} led (eval accuracy in the trials), tuned {final} wins the bake-off{tie}")
    return {"frameworks": frameworks, "verdict": {"untuned_leader": untuned, "tuned_leader": searched,
                                                  "final_winner": final, "changed": changed, "statement": statement}}


def champion_model(found: types.Artifact | None, data_classes: list[str]) -> types.Artifact | None:
    """The champion the run resolved, when there is one; a champion of other classes cannot be
    compared with models of this data and stops the evaluation."""
    if not champion.is_present(found):
        return None
    trained_on = champion.class_names(found)
    if trained_on is not None and trained_on != data_classes:
        raise ValueError(f"the champion ({champion.describe(found)}) was trained on the classes {trained_on}, this "
                         f"run's data has {data_classes}: they cannot be compared; register this dataset's models "
                         "under another registered_model_name")
    return found


def training_log_dir(input_dict: dict[str, list[types.Artifact]], candidate: str) -> str | None:
    """The candidate's Trainer logs (TensorBoard events), when the pipeline passed them."""
    logs = input_dict.get(run_input(candidate))
    return logs[0].uri if logs else None


def robustness_record(scores: scoring.Scores, per_example: int) -> dict[str, Any]:
    """How the corrupted test copy was made, and its checksums, for evaluation.json."""
    return {
        "seed": corruptions.SEED, "examples": int(len(scores.labels)), "names": list(corruptions.NAMES),
        "corruptions_per_example": per_example,
        "corrupted_images": int((next(iter(scores.corrupted_predictions.values())) != corruptions.NOT_SCORED).sum()),
        "corruptions": {c: {"description": corruptions.CORRUPTIONS[c], "sha256": scores.corruption_sha256[c]}
                        for c in corruptions.NAMES},
        "sha256": corruptions.combined_sha256(scores.corruption_sha256),
        "how": "every example of the split under corruptions_per_example of the corruptions (which ones "
               "and how: from the record and the seed, components/bakeoff_evaluator/corruptions.py), "
               "made and scored in the scoring step of the same Beam pass that scores the clean examples; "
               "sha256 per corruption: XOR of each corrupted image's sha256",
    }


def evaluate(candidates: dict[str, dict[str, Any]], scores: scoring.Scores, rule: DecisionRule,
             champion: str | None, per_example: int, class_names: list[str],
             champion_recorded: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The paired comparisons of every pair of models, and the decision; fills each candidate's robustness."""
    comparisons = metrics.pairwise_comparisons(scores.labels, {n: p.argmax(axis=1) for n, p in scores.probs.items()})
    for name, c in candidates.items():  # None: the suite is off (corruptions_per_example 0)
        c["robustness"] = metrics.corruption_accuracy(
            scores.labels, scores.corrupted_predictions[name], corruptions.NAMES,
            corruptions.NOT_SCORED) if per_example else None
    decided = decision.decide({n: c["metrics"] for n, c in candidates.items()}, rule, champion, comparisons,
                              robustness={n: c["robustness"]["mean_accuracy"] for n, c in candidates.items()}
                              if per_example else None,
                              frameworks={n: c["framework"] for n, c in candidates.items()},
                              class_names=class_names, champion_recorded=champion_recorded)
    return comparisons, decided


def write_evaluation(out_dir: str, evaluation: dict[str, Any], scores: scoring.Scores) -> dict[str, str]:
    """evaluation.json, report.html and summary.md in the evaluation's folder; returns their texts by name."""
    files = {artifacts.EVALUATION_FILE: json.dumps(evaluation, indent=2, sort_keys=True),
             artifacts.REPORT_FILE: report.render_html(evaluation, report.figures(evaluation, scores)),
             artifacts.SUMMARY_FILE: report.render_markdown(evaluation)}
    for name, text in files.items():
        with tf.io.gfile.GFile(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return files


def write_blessing(blessing: types.Artifact, evaluation: dict[str, Any]) -> None:
    """The pusher's input: blessed or not, the winner, and the reasons in a marker file."""
    decided = evaluation["decision"]
    winner = evaluation["candidates"][decided["winner"]]
    blessing.set_int_custom_property(artifacts.BLESSED, int(decided["blessed"]))
    blessing.set_string_custom_property(artifacts.WINNER, decided["winner"])
    blessing.set_string_custom_property("winner_framework", winner["framework"])
    blessing.set_float_custom_property("winner_accuracy", winner["metrics"]["accuracy"])
    blessing.set_int_custom_property("statistical_tie", int(decided["statistical_tie"]))
    marker = "BLESSED" if decided["blessed"] else "NOT_BLESSED"
    with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
        f.write("\n".join(decided["reasons"]) + "\n")


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        data = artifact_utils.get_single_instance(input_dict[EXAMPLES])
        split = exec_properties.get(SPLIT) or "test"
        rule = DecisionRule.from_properties(exec_properties)
        out_dir = artifact_utils.get_single_uri(output_dict[EVALUATION])
        model_dirs = candidate_models(input_dict)
        class_names = examples.class_names(data)
        given = (input_dict.get(CHAMPION) or [None])[0]
        resolved = champion_model(given, class_names)
        verified_as = {}
        if resolved is not None:
            model_dirs[artifacts.CHAMPION] = resolved.uri
            verified_as[artifacts.CHAMPION] = champion.describe(resolved)
            logging.info("BakeoffEvaluator: the champion is %s", champion.describe(resolved))
        registry = (MlflowRegistry(exec_properties[REGISTRY_URI], exec_properties[MODEL_NAME])
                    if exec_properties.get(REGISTRY_URI) else None)  # for the bake-off's MLflow runs only

        per_example = exec_properties.get(CORRUPTIONS_PER_EXAMPLE)
        per_example = corruptions.DEFAULT_PER_EXAMPLE if per_example is None else int(per_example)
        scores_path = os.path.join(out_dir, artifacts.SCORES_FILE)
        progress.info("scoring %d models on the %s split and its corrupted copy (one Beam pass)",
                      len(model_dirs), split)
        with self._make_beam_pipeline() as pipeline:
            scoring.score_all(pipeline, examples.split_pattern(data, split), model_dirs, scores_path, per_example,
                              verified_as)
        scores = scoring.load(scores_path)

        progress.info("measuring each model's latency and throughput")
        sample, _ = examples.load_split(data, split, limit=LATENCY_SAMPLE)
        train_examples = examples.split_counts(data).get("train")
        # The champion was trained on data this run may not have: no examples/s for it.
        candidates = {name: describe_candidate(d, scores.labels, scores.probs[name], sample,
                                               None if name == artifacts.CHAMPION else train_examples,
                                               verified_as.get(name))
                      for name, d in model_dirs.items()}
        if resolved is not None:
            candidates[artifacts.CHAMPION].update(version=champion.version(resolved),
                                                  identity=champion.identity(resolved))
        comparisons, decided = evaluate(candidates, scores, rule, artifacts.CHAMPION if resolved else None,
                                        per_example, class_names, champion.recorded_scores(resolved))
        tuned = tuning_records(input_dict)
        evaluation = {
            **({"tuning": tuning_summary(tuned, candidates, decided)} if tuned else {}),
            "version": FORMAT_VERSION, "candidates": candidates, "comparisons": comparisons,
            "decision": decided, "bootstrap": metrics.BOOTSTRAP, "class_names": class_names,
            # What the run was judged against (ChampionResolver's identity), present or not.
            "champion": {"identity": champion.identity(given) if given else "", "present": resolved is not None,
                         "description": champion.describe(given) if given else "no champion given"},
            "robustness": robustness_record(scores, per_example),
            "data": {"split": split, "examples": int(len(scores.labels)),
                     "examples_sha256": scores.examples_sha256, "examples_uri": data.uri,
                     "source_sha256": json.loads(data.get_string_custom_property("source_sha256") or "{}")},
        }
        runs = None
        if registry is not None:
            progress.info("logging the trainings and the evaluation to MLflow")
            runs = tracking.BakeoffTracking(registry, (self._context.pipeline_run_id if self._context else "") or "")
            evaluation["tracking"] = runs.start(evaluation, {name: training_log_dir(input_dict, name)
                                                             for name in candidates if name != artifacts.CHAMPION})
        try:
            files = write_evaluation(out_dir, evaluation, scores)
            kfp_artifacts.write_ui_outputs(output_dict, evaluation, files)
            write_blessing(artifact_utils.get_single_instance(output_dict[BLESSING]), evaluation)
        except BaseException:
            if runs is not None:
                runs.fail(evaluation["tracking"])
            raise
        if runs is not None:
            runs.finish(evaluation["tracking"], files)
