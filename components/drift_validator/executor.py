"""DriftValidator's executor: TFDV drift (vs a baseline) and skew (train vs test) comparators.

`train` and `test` of the new statistics are compared with the baseline's split of the same name (or
with the baseline's only dataset); `train` is compared with `test` for skew. Only the
comparators' anomalies are kept: the schema's own anomalies are ExampleValidator's.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import artifacts, image_checks
from components.drift_validator import baseline as baselines
from components.drift_validator import review
from trainers import common

STATISTICS = "statistics"
SCHEMA = "schema"
ANOMALIES = "anomalies"
DRIFT_ANOMALIES = "drift_anomalies"
EXAMPLES = "examples"  # optional: sample images for the review
SAMPLES_PER_CLASS = 8
SAMPLE_SCAN = 4096  # records read per split at most, looking for each label's samples
BASELINE = "baseline_statistics"  # the pinned file ("" = no drift check)
BASELINE_FROM_CHAMPION = "baseline_from_champion"
CHAMPION_STATISTICS = "champion_statistics"  # ChampionResolver's, optional
IMAGE_CHECKS = "image_checks"  # ImageValidator's results, optional: shown in the review
LABEL_LINF = "label_linf"
PIXEL_JS = "pixel_js"

LABEL = "label"
PIXEL_FEATURES = ("pixel_mean", "ink_fraction")
DRIFT_SPLITS = ("train", "test")  # compared with the baseline
SKEW_SPLIT = "train_vs_test_skew"
ANOMALIES_FILE = "SchemaDiff.pb"  # ExampleValidator's file name, so the same readers work
REVIEW_FILE = "data_review.html"
_COMPARATOR_TYPES = {t for name, t in anomalies_pb2.AnomalyInfo.Type.items() if name.startswith("COMPARATOR_")}

Stats = statistics_pb2.DatasetFeatureStatisticsList


def with_comparators(schema: schema_pb2.Schema, label_linf: float, pixel_js: float) -> schema_pb2.Schema:
    """A copy of the schema with drift and skew comparators on the label and pixel summaries."""
    result = schema_pb2.Schema()
    result.CopyFrom(schema)
    label = tfdv.get_feature(result, LABEL)
    label.drift_comparator.infinity_norm.threshold = label_linf
    label.skew_comparator.infinity_norm.threshold = label_linf
    for name in PIXEL_FEATURES:
        feature = tfdv.get_feature(result, name)
        feature.drift_comparator.jensen_shannon_divergence.threshold = pixel_js
        feature.skew_comparator.jensen_shannon_divergence.threshold = pixel_js
    return result


def baseline_for(baseline: dict[str, Stats], split: str) -> Stats:
    if split in baseline:
        return baseline[split]
    if len(baseline) == 1:
        return next(iter(baseline.values()))
    return baseline.get("train") or next(iter(baseline.values()))


def comparator_anomalies(anomalies: anomalies_pb2.Anomalies) -> anomalies_pb2.Anomalies:
    """Only what the drift/skew comparators found, plus their measurements."""
    result = anomalies_pb2.Anomalies()
    result.drift_skew_info.extend(anomalies.drift_skew_info)
    for feature, info in anomalies.anomaly_info.items():
        reasons = [r for r in info.reason if r.type in _COMPARATOR_TYPES]
        if reasons:
            kept = result.anomaly_info[feature]
            kept.CopyFrom(info)
            del kept.reason[:]
            kept.reason.extend(reasons)
            kept.description = " ".join(r.description for r in reasons)
            kept.short_description = "; ".join(r.short_description for r in reasons)
    return result


def compare(current: dict[str, Stats], baseline: dict[str, Stats] | None,
            schema: schema_pb2.Schema) -> dict[str, anomalies_pb2.Anomalies]:
    """{split: drift vs baseline} for train and test, and {SKEW_SPLIT: train vs test}."""
    result = {}
    if baseline is not None:
        # `eval` is a stable-hash sample of the same file as `train`: a drift of that file shows in
        # `train` with nine times the examples, while eval's small-sample noise only adds false alarms.
        for split, stats in current.items():
            if split not in DRIFT_SPLITS:
                continue
            result[split] = comparator_anomalies(
                tfdv.validate_statistics(stats, schema, previous_statistics=baseline_for(baseline, split)))
    if "train" in current and "test" in current:
        result[SKEW_SPLIT] = comparator_anomalies(
            tfdv.validate_statistics(current["train"], schema, serving_statistics=current["test"]))
    return result


def sample_images(examples: types.Artifact, per_class: int = SAMPLES_PER_CLASS,
                  scan: int = SAMPLE_SCAN) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)}: the first `per_class` images of each label, in file order."""
    out = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
        picked: dict[int, list[np.ndarray]] = {}
        seen = 0
        for images, labels in common.make_dataset([pattern], 512, shuffle=False, seed=0, cache=False):
            for image, label in zip(images.numpy(), labels.numpy(), strict=True):
                if len(picked.setdefault(int(label), [])) < per_class:
                    picked[int(label)].append(image)
            seen += len(labels)
            if seen >= scan:
                break
        order = sorted(picked)
        out[split] = (np.stack([image for label in order for image in picked[label]]),
                      np.array([label for label in order for _ in picked[label]]))
    return out


def load_current(statistics: types.Artifact) -> dict[str, Stats]:
    return {split: stats_artifact_utils.load_statistics(statistics, split).proto()
            for split in artifact_utils.decode_split_names(statistics.split_names)}


def write_anomalies(artifact: types.Artifact, per_split: dict[str, anomalies_pb2.Anomalies]) -> None:
    artifact.split_names = artifact_utils.encode_split_names(list(per_split))
    for split, anomalies in per_split.items():
        split_dir = artifact_utils.get_split_uri([artifact], split)
        tf.io.gfile.makedirs(split_dir)
        io_utils.write_bytes_file(os.path.join(split_dir, ANOMALIES_FILE), anomalies.SerializeToString())


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        statistics = artifact_utils.get_single_instance(input_dict[STATISTICS])
        schema = io_utils.SchemaReader().read(
            io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(input_dict[SCHEMA])))
        validator_anomalies = artifacts.read_anomalies(artifact_utils.get_single_instance(input_dict[ANOMALIES]))
        output = artifact_utils.get_single_instance(output_dict[DRIFT_ANOMALIES])
        label_linf, pixel_js = float(exec_properties[LABEL_LINF]), float(exec_properties[PIXEL_JS])
        champion_statistics = input_dict.get(CHAMPION_STATISTICS) or [None]
        chosen = baselines.resolve(exec_properties.get(BASELINE) or "",
                                   bool(exec_properties.get(BASELINE_FROM_CHAMPION)), champion_statistics[0])
        baseline_path = chosen.path
        logging.info("DriftValidator: baseline %s (%s)", baseline_path or "none", chosen.source)

        current = load_current(statistics)
        baseline = baselines.load_baseline(baseline_path) if baseline_path else None
        if baseline is None:
            logging.warning("DriftValidator: no baseline configured, only train/test skew is checked")
        drift = compare(current, baseline, with_comparators(schema, label_linf, pixel_js))
        write_anomalies(output, drift)

        review_path = os.path.join(output.uri, REVIEW_FILE)
        samples = sample_images(input_dict[EXAMPLES][0]) if input_dict.get(EXAMPLES) else None
        images = None
        if input_dict.get(IMAGE_CHECKS):
            checks = artifact_utils.get_single_instance(input_dict[IMAGE_CHECKS])
            images = (image_checks.read_results(checks), image_checks.read_pictures(checks))
        html = review.render(current=current, baseline=baseline, baseline_path=f"{baseline_path} ({chosen.source})",
                             samples=samples, images=images,
                             validator_anomalies=validator_anomalies, drift_anomalies=drift,
                             thresholds={"label L-infinity": label_linf, "pixel Jensen-Shannon": pixel_js})
        io_utils.write_string_file(review_path, html)
        output.set_string_custom_property(artifacts.REVIEW_HTML, review_path)
        output.set_string_custom_property(artifacts.BASELINE_USED, baseline_path)
        output.set_string_custom_property("baseline_source", chosen.source)
        logging.info("DriftValidator: review written to %s", review_path)
