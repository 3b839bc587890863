"""The drift baseline, chosen when DriftValidator runs (not when the DAG is built): the
statistics the registry's current champion was trained on (the pusher records where they live on
each version it registers), else the pinned file from the config. Works the same locally and on
Kubeflow, and follows the champion alias wherever it moves (a rollback included)."""

from __future__ import annotations

import dataclasses
import logging
import os

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.components.statistics_gen import stats_artifact_utils

from components.registry import STATISTICS_TAG, MlflowRegistry

Stats = statistics_pb2.DatasetFeatureStatisticsList


class BaselineError(RuntimeError):
    """The configured baseline statistics cannot be read."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    path: str  # "" when drift checks are off
    source: str  # in words, for the log, the review page and the artifact


def champion_statistics(registry_uri: str, model_name: str) -> tuple[str, str] | None:
    """(statistics URI, version) of the champion's training data, or None when there is no
    champion, it carries no statistics, or they are gone from the artifact store."""
    champion = MlflowRegistry(registry_uri, model_name).champion()
    if champion is None:
        return None
    uri = champion.tags.get(STATISTICS_TAG, "")
    if not uri:
        return None
    if not tf.io.gfile.exists(uri):
        logging.warning("drift baseline: champion version %s names statistics %s, which no longer exist",
                        champion.version, uri)
        return None
    return uri, champion.version


def resolve(pinned: str, from_champion: bool, registry_uri: str, model_name: str) -> Baseline:
    """The champion's statistics when asked for and found, else the pinned file ("" = no drift check)."""
    if not pinned:
        return Baseline("", "none: drift checks are off")
    if from_champion and registry_uri and model_name:
        found = champion_statistics(registry_uri, model_name)
        if found:
            uri, version = found
            return Baseline(uri, f"the statistics of champion version {version} of {model_name}")
    return Baseline(pinned, "the pinned baseline file (no champion with statistics in the registry)"
                    if from_champion else "the pinned baseline file")


def load_baseline(path: str) -> dict[str, Stats]:
    """{split name: statistics}: a Statistics artifact folder (Split-*/FeatureStats.pb), or a
    .pbtxt/.pb DatasetFeatureStatisticsList whose datasets are named after the splits."""
    if not tf.io.gfile.exists(path):
        raise BaselineError(f"{path}: baseline statistics not found (set baseline_statistics, or 'none')")
    if tf.io.gfile.isdir(path):
        result = {}
        for entry in sorted(tf.io.gfile.listdir(path)):
            entry = entry.rstrip("/")
            stats_file = os.path.join(path, entry, stats_artifact_utils.BINARY_PB_BASENAME)
            if entry.startswith("Split-") and tf.io.gfile.exists(stats_file):
                result[entry[len("Split-"):]] = tfdv.load_stats_binary(stats_file)
        if not result:
            raise BaselineError(f"{path}: no Split-*/FeatureStats.pb in this statistics folder")
        return result
    try:
        stats = tfdv.load_stats_text(path) if path.endswith(".pbtxt") else tfdv.load_stats_binary(path)
    except Exception as e:  # any parse error is the same problem for the user
        raise BaselineError(f"{path}: not a DatasetFeatureStatisticsList ({e})") from e
    if not stats.datasets:
        raise BaselineError(f"{path}: the baseline holds no dataset")
    return {d.name or "all": Stats(datasets=[d]) for d in stats.datasets}
