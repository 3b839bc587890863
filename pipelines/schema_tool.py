"""Proposes a curated schema from an Examples split, for a human to review and check in.

python -m pipelines.schema_tool EXAMPLES_SPLIT_DIR [--output schema/schema.pbtxt]
python -m pipelines.schema_tool --baseline STATISTICS_DIR [--output schema/baseline_statistics.pbtxt]

TFDV infers the schema; the curation then states what MNIST must be: every feature present
exactly once per example, labels in 0-9, pixel summaries within their possible ranges.
`--baseline` turns a StatisticsGen artifact folder (Split-*/FeatureStats.pb) into the pinned drift
baseline: one text DatasetFeatureStatisticsList, one dataset per split, named after it.
"""

from __future__ import annotations

import argparse
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
    from components.drift_validator.executor import load_baseline

    combined = statistics_pb2.DatasetFeatureStatisticsList()
    for split, stats in sorted(load_baseline(statistics_dir).items()):
        dataset = combined.datasets.add()
        dataset.CopyFrom(stats.datasets[0])
        dataset.name = split
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tfdv.write_stats_text(combined, output)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("split_dir", nargs="?", help="a Split-train folder of GZIP TFRecords")
    parser.add_argument("--baseline", metavar="STATISTICS_DIR", help="write a drift baseline from these statistics")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    if args.baseline:
        print(write_baseline(args.baseline, args.output or "schema/baseline_statistics.pbtxt"))
        return
    if not args.split_dir:
        parser.error("give a Split-train folder, or --baseline STATISTICS_DIR")
    args.output = args.output or "schema/proposed_schema.pbtxt"
    stats = tfdv.generate_statistics_from_tfrecord(
        os.path.join(args.split_dir, "*"),
        stats_options=tfdv.StatsOptions())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tfdv.write_schema_text(propose(stats), args.output)
    print(args.output)


if __name__ == "__main__":
    main()
