"""What one stage writes and another reads, named once: the evaluation's files, the blessing's
and the drift anomalies' properties, and the reader of TFDV anomalies files. Stages import this
module, never each other's executors."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.types import artifact_utils
from tfx.utils import io_utils

# BakeoffEvaluator's ModelEvaluation folder.
EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.md"
SCORES_FILE = "scores.npz"
# The candidate name the registry's champion is scored under.
CHAMPION = "champion"

# BakeoffEvaluator's ModelBlessing: custom properties the pusher reads.
BLESSED = "blessed"
WINNER = "winner"

# DriftValidator's ExampleAnomalies: where its review page is and which baseline it compared with.
REVIEW_HTML = "review_html"
BASELINE_USED = "baseline_statistics"


def read_anomalies(anomalies: types.Artifact) -> dict[str, anomalies_pb2.Anomalies]:
    """Each split's Anomalies proto, from the binary files ExampleValidator (and DriftValidator) write."""
    result = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        split_dir = artifact_utils.get_split_uri([anomalies], split)
        for name in tf.io.gfile.listdir(split_dir):
            result[split] = anomalies_pb2.Anomalies.FromString(
                io_utils.read_bytes_file(os.path.join(split_dir, name)))
    return result
