"""The drift baseline: the statistics the registry's champion was trained on (ChampionResolver's
`statistics` artifact, verified against the version's signed manifest when it was resolved), else
the pinned file from the config. Chosen from the run's inputs, never from the registry: a
rollback moves the baseline with the champion because the champion is an input of the run."""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils

from components import champion

Stats = statistics_pb2.DatasetFeatureStatisticsList


class BaselineError(RuntimeError):
    """The configured baseline statistics cannot be read."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    path: str  # "" when drift checks are off
    source: str  # in words, for the log, the review page and the artifact


def resolve(pinned: str, from_champion: bool, champion_statistics: types.Artifact | None) -> Baseline:
    """The champion's statistics when asked for and it has them, else the pinned file ("" = no drift check)."""
    if not pinned:
        return Baseline("", "none: drift checks are off")
    if not from_champion:
        return Baseline(pinned, "the pinned baseline file")
    if champion_statistics is None or not champion.is_present(champion_statistics):
        why = champion.describe(champion_statistics) if champion_statistics is not None else "no champion given"
        return Baseline(pinned, f"the pinned baseline file ({why})")
    if not artifact_utils.decode_split_names(champion_statistics.split_names):
        return Baseline(pinned, f"the pinned baseline file (champion {champion.describe(champion_statistics)} was "
                                "registered without its training statistics)")
    return Baseline(champion_statistics.uri, f"the statistics of champion {champion.describe(champion_statistics)}")


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
