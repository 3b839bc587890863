"""BakeoffEvaluator's executor: every candidate scored on the same examples by the same code.

Writes evaluation.json, report.html and summary.md into the evaluation artifact, and the
decision (winner, blessed, reasons) into the blessing artifact the pusher reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import jinja2
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.bakeoff_evaluator import metrics
from trainers import common, serving

EXAMPLES = "examples"
CANDIDATES = ("keras_model", "pytorch_model")
EVALUATION = "evaluation"
BLESSING = "blessing"
MIN_ACCURACY = "min_accuracy"
SPLIT = "split"
EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.md"
FORMAT_VERSION = 1


def load_split(examples: types.Artifact, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All (images, labels) of one split, in file order."""
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    images, labels = [], []
    for x, y in common.make_dataset([pattern], 1024, shuffle=False, seed=0, cache=False).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()


def render_report(evaluation: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(__file__)),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(**evaluation)


def render_summary(evaluation: dict[str, Any]) -> str:
    d = evaluation["decision"]
    lines = [f"# MNIST bake-off: **{d['winner']}** {'blessed' if d['blessed'] else 'not blessed'}", "",
             "| candidate | framework | accuracy | 95 % CI | log loss |", "|---|---|---|---|---|"]
    for name in d["ranking"]:
        c = evaluation["candidates"][name]
        m = c["metrics"]
        lines.append(f"| {name} | {c['framework']} | {m['accuracy']:.4f} | "
                     f"{m['accuracy_ci95'][0]:.4f}-{m['accuracy_ci95'][1]:.4f} | {m['log_loss']:.4f} |")
    lines += [""] + [f"- {r}" for r in d["reasons"]]
    return "\n".join(lines) + "\n"


def evaluate_candidates(model_dirs: dict[str, str], images: np.ndarray, labels: np.ndarray,
                        min_accuracy: float) -> dict[str, Any]:
    candidates, predictions = {}, {}
    for name, model_dir in sorted(model_dirs.items()):
        predict, meta = serving.load_predictor(model_dir)
        probs = serving.predict_in_batches(predict, images)
        predictions[name] = probs.argmax(axis=1)
        candidates[name] = {"framework": meta["framework"], "model": meta["model"],
                            "parameters": meta["parameters"], "device": meta["device"],
                            "uri": model_dir, "metrics": metrics.score(labels, probs)}
        logging.info("BakeoffEvaluator: %s accuracy %.4f", name, candidates[name]["metrics"]["accuracy"])
    results = {name: c["metrics"] for name, c in candidates.items()}
    return {"candidates": candidates,
            "comparisons": metrics.pairwise_mcnemar(labels, predictions),
            "decision": metrics.decide(results, min_accuracy)}


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES])
        split = exec_properties.get(SPLIT) or "test"
        images, labels = load_split(examples, split)
        model_dirs = {name: os.path.join(artifact_utils.get_single_uri(input_dict[name]), "Format-Serving")
                      for name in CANDIDATES if input_dict.get(name)}
        evaluation = evaluate_candidates(model_dirs, images, labels, float(exec_properties[MIN_ACCURACY]))
        evaluation["version"] = FORMAT_VERSION
        evaluation["data"] = {
            "split": split, "examples": int(len(labels)), "sha256": fingerprint(images, labels),
            "examples_uri": examples.uri,
            "source_sha256": json.loads(examples.get_string_custom_property("source_sha256") or "{}"),
        }

        out_dir = artifact_utils.get_single_uri(output_dict[EVALUATION])
        for name, text in ((EVALUATION_FILE, json.dumps(evaluation, indent=2, sort_keys=True)),
                           (REPORT_FILE, render_report(evaluation)),
                           (SUMMARY_FILE, render_summary(evaluation))):
            with tf.io.gfile.GFile(os.path.join(out_dir, name), "w") as f:
                f.write(text)

        decision = evaluation["decision"]
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING])
        blessing.set_int_custom_property("blessed", int(decision["blessed"]))
        blessing.set_string_custom_property("winner", decision["winner"])
        blessing.set_string_custom_property(
            "winner_framework", evaluation["candidates"][decision["winner"]]["framework"])
        blessing.set_float_custom_property(
            "winner_accuracy", evaluation["candidates"][decision["winner"]]["metrics"]["accuracy"])
        with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if decision["blessed"] else "NOT_BLESSED"),
                               "w") as f:
            f.write("\n".join(decision["reasons"]) + "\n")
