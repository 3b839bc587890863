"""DataGate's executor: fails the run, naming every anomaly, when ExampleValidator found any, when
DriftValidator found drift against the baseline or skew between train and test, or when
ImageValidator found test images copied from training images or drifted images (its `problems`,
one line each: it only reads them, so a passing gate stays cheap).

It has no output: the trainers depend on the gate explicitly, so they cannot start before it has
passed.
"""

from __future__ import annotations

from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import artifacts, image_checks

ANOMALIES = "anomalies"
DRIFT_ANOMALIES = "drift_anomalies"
IMAGE_CHECKS = "image_checks"


class DataAnomaliesError(RuntimeError):
    """The data failed validation; training must not start."""


def describe(per_split: dict[str, anomalies_pb2.Anomalies], what: str = "") -> list[str]:
    """One plain sentence per anomaly: split, feature, what is wrong.

    drift_skew_info holds every comparator's measurement, passing or not; the ones over their
    threshold are also anomaly_info entries, so only those are listed."""
    lines = []
    for split, anomalies in sorted(per_split.items()):
        where = f"{what} {split}".strip()
        for feature, info in sorted(anomalies.anomaly_info.items()):
            lines.append(f"[{where}] feature '{feature}': {info.short_description} - {info.description}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"[{where}] dataset: {info.short_description} - {info.description}")
    return lines


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES])
        problems = describe(artifacts.read_anomalies(anomalies))
        review = ""
        if input_dict.get(DRIFT_ANOMALIES):
            drift = artifact_utils.get_single_instance(input_dict[DRIFT_ANOMALIES])
            problems += describe(artifacts.read_anomalies(drift), "drift/skew:")
            review = drift.get_string_custom_property(artifacts.REVIEW_HTML)
        if input_dict.get(IMAGE_CHECKS):
            problems += image_checks.problems(image_checks.read_results(
                artifact_utils.get_single_instance(input_dict[IMAGE_CHECKS])))
        if problems:
            raise DataAnomaliesError(
                f"data validation found {len(problems)} anomalies (details in {anomalies.uri}"
                f"{'; review: ' + review if review else ''}); training will not run:\n  "
                + "\n  ".join(problems))
