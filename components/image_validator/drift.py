"""Image drift against the baseline (the champion's training images, else the pinned full-MNIST
baseline): the centre-of-mass and bounding-box distributions compared by TFX's
DistributionValidator (TFDV's comparators: Jensen-Shannon divergence, L-infinity distance), and the
mean image by the part of its difference that sampling does not explain.

DistributionValidator passes every split when it has no baseline ("rubber stamping"): here a
missing baseline, or a baseline without one of the compared features, is a problem that stops the
run, never a pass. Only `image_baseline: none` (the config's explicit, logged opt-out) turns the
check off.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2
from tfx import types
from tfx.components.distribution_validator import executor as distribution_validator
from tfx.proto import distribution_validator_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import io_utils, json_utils

from components import champion, image_checks, image_hashes
from components.image_validator import geometry

DRIFT_SPLITS = ("train", "test")  # compared with the baseline's train split (eval is a sample of train's file)
_NOT_COMPARED = anomalies_pb2.AnomalyInfo.Type.STATS_NOT_AVAILABLE
_KIND = {anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
         anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance"}


class BaselineMissing(RuntimeError):
    """The image drift check has no baseline to compare with."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    centre_js: float  # Jensen-Shannon divergence of the centre-of-mass x and y distributions
    box_linf: float  # L-infinity distance of the bounding-box height and width distributions
    mean_image: float  # excess difference of the mean image, a share of the baseline's ink


@dataclasses.dataclass(frozen=True)
class ImageBaseline:
    path: str  # a folder with Split-train/ FeatureStats.pb and image_moments.npz; "" = drift check off
    source: str  # in words
    champion_fingerprints: str = ""  # the champion's training images' image_hashes.npz, if it has them
    why_no_champion: str = ""  # why the check against the champion's training images cannot run


def resolve(pinned: str, from_champion: bool, champion_statistics: types.Artifact | None) -> ImageBaseline:
    """The champion's image baseline (ChampionResolver's `<statistics>/images/`) when it has one
    and the config follows the champion, else the pinned one; and the champion's fingerprints."""
    if champion_statistics is None or not champion.is_present(champion_statistics):
        why = champion.describe(champion_statistics) if champion_statistics is not None else "no champion given"
        return _pinned(pinned, why, why_no_champion=why)
    who = f"champion {champion.describe(champion_statistics)}"
    images = image_checks.champion_images(champion_statistics.uri)
    train = image_checks.split_folder(images, image_checks.BASELINE_SPLIT)
    fingerprints = os.path.join(train, image_checks.HASHES_FILE)
    has_fingerprints = tf.io.gfile.exists(fingerprints)
    why_not = "" if has_fingerprints else (f"{who} was registered without the fingerprints of its training images "
                                           f"(no {image_checks.CHAMPION_IMAGES_DIR}/Split-train/"
                                           f"{image_checks.HASHES_FILE}: a version from before the image checks)")
    if from_champion and tf.io.gfile.exists(os.path.join(train, image_checks.FEATURE_STATS_FILE)):
        return ImageBaseline(images, f"the training images of {who}", fingerprints if has_fingerprints else "",
                             why_not)
    reason = "the config does not follow the champion" if not from_champion else \
        f"{who} was registered without image statistics"
    return _pinned(pinned, reason, fingerprints if has_fingerprints else "", why_not)


def _pinned(pinned: str, why: str, fingerprints: str = "", why_no_champion: str = "") -> ImageBaseline:
    if not pinned:
        return ImageBaseline("", "none: image drift check off (image_baseline none)", fingerprints, why_no_champion)
    return ImageBaseline(pinned, f"the pinned image baseline ({why})", fingerprints, why_no_champion)


def validator_config(thresholds: Thresholds) -> distribution_validator_pb2.DistributionValidatorConfig:
    """DistributionValidator's config: a Jensen-Shannon comparator on the centre of mass, an
    L-infinity one on the bounding box."""
    config = distribution_validator_pb2.DistributionValidatorConfig()
    for name in geometry.CENTRE_FEATURES + geometry.BOX_FEATURES:
        feature = config.default_slice_config.feature.add()
        feature.path.step.append(name)
        if name in geometry.CENTRE_FEATURES:
            feature.distribution_comparator.jensen_shannon_divergence.threshold = thresholds.centre_js
        else:
            feature.distribution_comparator.infinity_norm.threshold = thresholds.box_linf
    return config


def _statistics_artifact(uri: str, splits: list[str]) -> types.Artifact:
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = uri
    artifact.split_names = artifact_utils.encode_split_names(splits)
    return artifact


def baseline_artifact(path: str) -> types.Artifact:
    """The baseline folder as the ExampleStatistics artifact DistributionValidator reads; raises
    BaselineMissing when it has no train split's statistics."""
    stats = os.path.join(image_checks.split_folder(path, image_checks.BASELINE_SPLIT), image_checks.FEATURE_STATS_FILE)
    if not tf.io.gfile.exists(stats):
        raise BaselineMissing(f"no image baseline at {path} (missing {stats})")
    return _statistics_artifact(path, [image_checks.BASELINE_SPLIT])


def run_distribution_validator(current: types.Artifact, baseline: types.Artifact | None, output: types.Artifact,
                               splits: list[str], thresholds: Thresholds) -> dict[str, anomalies_pb2.Anomalies]:
    """{split: anomalies} of each split against the baseline's train split, from TFX's own
    DistributionValidator executor; fails closed where it would pass for want of a baseline."""
    if baseline is None:
        raise BaselineMissing("no image baseline given")
    pairs = [(split, image_checks.BASELINE_SPLIT) for split in splits]
    distribution_validator.Executor().Do(
        {standard_component_specs.STATISTICS_KEY: [current],
         standard_component_specs.BASELINE_STATISTICS_KEY: [baseline]},
        {standard_component_specs.ANOMALIES_KEY: [output]},
        {standard_component_specs.DISTRIBUTION_VALIDATOR_CONFIG_KEY: validator_config(thresholds),
         standard_component_specs.INCLUDE_SPLIT_PAIRS_KEY: json_utils.dumps(pairs)})
    blessed = output.get_json_value_custom_property(distribution_validator.ARTIFACT_PROPERTY_BLESSED_KEY) or {}
    if not blessed or any(v == distribution_validator.NO_BASELINE_STATS for v in blessed.values()):
        raise BaselineMissing(f"DistributionValidator found no baseline statistics (blessed: {dict(blessed)})")
    found = {}
    for split, base in pairs:
        path = os.path.join(output.uri, f"SplitPair-{split}_{base}", distribution_validator.DEFAULT_FILE_NAME)
        found[split] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
    return found


def measures_of(split: str, anomalies: anomalies_pb2.Anomalies) -> list[dict]:
    """Every comparator's measurement for the split (passing or not), and each feature it could not compare."""
    rows = []
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for m in info.drift_measurements:
            rows.append({"split": split, "feature": name, "measure": geometry.FEATURES.get(name, name),
                         "kind": _KIND.get(m.type, "distance"), "value": m.value, "threshold": m.threshold,
                         "over": m.value > m.threshold})
    for name, info in anomalies.anomaly_info.items():
        if any(r.type == _NOT_COMPARED for r in info.reason):
            rows.append({"split": split, "feature": name, "measure": geometry.FEATURES.get(name, name),
                         "kind": "not compared", "value": None, "threshold": None, "over": True,
                         "why": " ".join(r.description for r in info.reason)})
    return rows


def mean_image_measure(split: str, current: dict, baseline: dict, threshold: float) -> dict:
    difference = geometry.mean_image_difference(current, baseline)
    return {"split": split, "feature": "mean_image", "measure": "mean image", "kind": "excess difference",
            "value": difference.excess, "threshold": threshold, "over": difference.excess > threshold,
            "raw": difference.raw, "noise": difference.noise}


def load_moments(statistics_uri: str, split: str) -> dict:
    return image_hashes.load(os.path.join(image_checks.split_folder(statistics_uri, split), image_checks.MOMENTS_FILE))


def problem_lines(measures: list[dict], source: str) -> list[str]:
    """One line per measure over its threshold, naming the split, the check and the numbers."""
    lines = []
    for m in measures:
        if not m["over"]:
            continue
        if m["value"] is None:
            lines.append(f"[image drift: {m['split']}] {m['measure']}: could not be compared with {source}: {m['why']}")
        else:
            lines.append(f"[image drift: {m['split']}] {m['measure']}: {m['kind']} {m['value']:.3f} above the "
                         f"threshold {m['threshold']:g}, against {source}")
    return lines


def write_pinned_baseline(image_statistics: str, folder: str) -> str:
    """The pinned image baseline (schema/image_baseline/) from an `image_statistics` folder: its
    train split's statistics and moments as text (reviewable in a diff, no binary in the
    repository), without the fingerprints (no training images in the repository).
    bench/gates.py --baseline-out runs it on full MNIST."""
    source = image_checks.split_folder(image_statistics, image_checks.BASELINE_SPLIT)
    target = image_checks.split_folder(folder, image_checks.BASELINE_SPLIT)
    tf.io.gfile.makedirs(target)
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        io_utils.read_bytes_file(os.path.join(source, image_checks.FEATURE_STATS_FILE)))
    io_utils.write_pbtxt_file(os.path.join(target, image_checks.FEATURE_STATS_TEXT_FILE), stats)
    moments = image_hashes.load(os.path.join(source, image_checks.MOMENTS_FILE))
    with tf.io.gfile.GFile(os.path.join(target, image_checks.MOMENTS_TEXT_FILE), "w") as f:
        json.dump({name: {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.ravel().tolist()}
                   for name, a in sorted(moments.items())}, f)
    return folder


def materialise(baseline: str, into: str) -> str:
    """The baseline folder as DistributionValidator and load_moments read it: `baseline` itself
    when it holds the binary files (a champion's), else its text forms (the pinned baseline)
    written as those files under `into`. Raises BaselineMissing when it holds neither."""
    source = image_checks.split_folder(baseline, image_checks.BASELINE_SPLIT)
    binary = os.path.join(source, image_checks.FEATURE_STATS_FILE)
    if tf.io.gfile.exists(binary):
        return baseline
    text = os.path.join(source, image_checks.FEATURE_STATS_TEXT_FILE)
    moments_text = os.path.join(source, image_checks.MOMENTS_TEXT_FILE)
    if not (tf.io.gfile.exists(text) and tf.io.gfile.exists(moments_text)):
        raise BaselineMissing(f"no image baseline at {baseline} (missing {binary}, and no {text} with "
                              f"{image_checks.MOMENTS_TEXT_FILE} beside it)")
    try:
        stats = io_utils.parse_pbtxt_file(text, statistics_pb2.DatasetFeatureStatisticsList())
    except text_format.ParseError as e:
        raise BaselineMissing(f"{text}: not a statistics text proto: {e}") from None
    try:
        with tf.io.gfile.GFile(moments_text) as f:
            moments = {name: np.asarray(m["values"], dtype=np.dtype(m["dtype"])).reshape(m["shape"])
                       for name, m in json.load(f).items()}
        missing = {"count", "mean", "variance"} - set(moments)
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))}")
    except (ValueError, KeyError, TypeError) as e:
        raise BaselineMissing(f"{moments_text}: not the image moments ({type(e).__name__}: {e})") from None
    target = image_checks.split_folder(into, image_checks.BASELINE_SPLIT)
    tf.io.gfile.makedirs(target)
    io_utils.write_bytes_file(os.path.join(target, image_checks.FEATURE_STATS_FILE), stats.SerializeToString())
    image_hashes.save_arrays(os.path.join(target, image_checks.MOMENTS_FILE), moments)
    return into
