"""Proposes a curated schema from an Examples split, for a human to review and check in.

python -m pipelines schema propose EXAMPLES_SPLIT_DIR [--output schema/proposed_schema.pbtxt]
python -m pipelines schema baseline STATISTICS_DIR [--output schema/baseline_statistics.pbtxt]

TFDV infers the schema; the curation then states what MNIST must be: every feature present
exactly once per example, labels in 0-9, pixel summaries within their possible ranges.
`--baseline` turns a StatisticsGen artifact folder (Split-*/FeatureStats.pb) into the pinned drift
baseline: one text DatasetFeatureStatisticsList, one dataset per split, named after it.
"""

from __future__ import annotations

import os

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

FLOAT_RANGES = {"pixel_mean": (0.0, 255.0), "ink_fraction": (0.0, 1.0)}


def curate(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    for feature in schema.feature:
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        feature.value_count.min = 1
        feature.value_count.max = 1
        if feature.name == "image":
            # An image, not a category: TFDV then keeps byte-size stats instead of counting the
            # 60,000 distinct pixel strings as categorical values (slow, and useless).
            feature.ClearField("domain_info")
            feature.image_domain.SetInParent()
        elif feature.name == "label":
            feature.ClearField("domain_info")
            feature.int_domain.CopyFrom(schema_pb2.IntDomain(name="digit", min=0, max=9, is_categorical=True))
        elif feature.name in FLOAT_RANGES:
            low, high = FLOAT_RANGES[feature.name]
            feature.float_domain.CopyFrom(schema_pb2.FloatDomain(min=low, max=high))
    return schema


def propose(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> schema_pb2.Schema:
    return curate(tfdv.infer_schema(statistics, infer_feature_shape=False))


def write_baseline(statistics_dir: str, output: str) -> str:
    """Every split's statistics in one reviewable text file, datasets named by split."""
    from components.drift_validator.baseline import load_baseline

    combined = statistics_pb2.DatasetFeatureStatisticsList()
    for split, stats in sorted(load_baseline(statistics_dir).items()):
        dataset = combined.datasets.add()
        dataset.CopyFrom(stats.datasets[0])
        dataset.name = split
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tfdv.write_stats_text(combined, output)
    return output


def propose_schema(split_dir: str, output: str) -> str:
    """TFDV's schema for the records in `split_dir`, curated, written for review."""
    stats = tfdv.generate_statistics_from_tfrecord(os.path.join(split_dir, "*"), stats_options=tfdv.StatsOptions())
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tfdv.write_schema_text(propose(stats), output)
    return output
