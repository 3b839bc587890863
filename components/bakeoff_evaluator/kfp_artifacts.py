"""What the Kubeflow Pipelines v2 UI shows of the bake-off: artifact types it renders, declared as
TFX artifact types, and how the evaluator fills them.

KubeflowV2DagRunner writes a custom type's TYPE_NAME as the artifact's schema title, so these
arrive in KFP as system.HTML / system.Markdown (the UI shows the file at the artifact's URI) and
system.Metrics / system.ClassificationMetrics (the UI reads the artifact's metadata, which the
TFX launcher fills from custom properties). HTML and Markdown are ValueArtifacts so that their
URI is a file, locally too.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tfx import types
from tfx.types import artifact, artifact_utils, value_artifact

from components import artifacts

# The evaluator's output keys of the KFP UI's artifacts.
REPORT = "report"
SUMMARY = "summary"
METRICS = "metrics"
CLASSIFICATION_METRICS = "classification_metrics"


class _TextArtifact(value_artifact.ValueArtifact):
    def encode(self, value: str) -> bytes:
        return value.encode("utf-8")

    def decode(self, serialized_value: bytes) -> str:
        return serialized_value.decode("utf-8")


class HTML(_TextArtifact):
    TYPE_NAME = "system.HTML"


class Markdown(_TextArtifact):
    TYPE_NAME = "system.Markdown"


class Metrics(artifact.Artifact):
    TYPE_NAME = "system.Metrics"


class ClassificationMetrics(artifact.Artifact):
    TYPE_NAME = "system.ClassificationMetrics"


def classification_metrics(confusion: list[list[int]], class_names: list[str]) -> dict[str, Any]:
    """The confusion matrix in the form the KFP v2 UI reads from system.ClassificationMetrics."""
    return {"annotationSpecs": [{"displayName": name} for name in class_names],
            "rows": [{"row": row} for row in confusion]}


def write_ui_outputs(output_dict: dict[str, list[types.Artifact]], evaluation: dict[str, Any],
                     files: dict[str, str]) -> None:
    """The report and summary as the files at their artifacts' URIs (the UI shows them), every
    model's headline metrics as Metrics properties, and the winner's confusion matrix; each only
    where the component has that output."""
    for key, name in ((REPORT, artifacts.REPORT_FILE), (SUMMARY, artifacts.SUMMARY_FILE)):
        if output_dict.get(key):
            with tf.io.gfile.GFile(artifact_utils.get_single_uri(output_dict[key]), "w") as f:
                f.write(files[name])
    if output_dict.get(METRICS):
        kfp_metrics = artifact_utils.get_single_instance(output_dict[METRICS])
        for name, c in evaluation["candidates"].items():
            for key in ("accuracy", "log_loss", "expected_calibration_error"):
                kfp_metrics.set_float_custom_property(f"{name}.{key}", c["metrics"][key])
            if c["robustness"]:
                kfp_metrics.set_float_custom_property(f"{name}.corrupted_mean_accuracy",
                                                      c["robustness"]["mean_accuracy"])
    if output_dict.get(CLASSIFICATION_METRICS):
        winner = evaluation["candidates"][evaluation["decision"]["winner"]]
        artifact_utils.get_single_instance(output_dict[CLASSIFICATION_METRICS]).set_json_value_custom_property(
            "confusionMatrix", classification_metrics(winner["metrics"]["confusion_matrix"],
                                                      evaluation["class_names"]))
