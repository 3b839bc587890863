"""Proposes a curated schema from an Examples split, for a human to review and check in.

python -m pipelines.schema_tool EXAMPLES_SPLIT_DIR [--output schema/schema.pbtxt]

TFDV infers the schema; the curation then states what MNIST must be: every feature present
exactly once per example, labels in 0-9, pixel summaries within their possible ranges.
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
        if feature.name == "label":
            feature.ClearField("domain_info")
            feature.int_domain.CopyFrom(schema_pb2.IntDomain(name="digit", min=0, max=9, is_categorical=True))
        elif feature.name in FLOAT_RANGES:
            low, high = FLOAT_RANGES[feature.name]
            feature.float_domain.CopyFrom(schema_pb2.FloatDomain(min=low, max=high))
    return schema


def propose(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> schema_pb2.Schema:
    return curate(tfdv.infer_schema(statistics, infer_feature_shape=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("split_dir", help="a Split-train folder of GZIP TFRecords")
    parser.add_argument("--output", default="schema/proposed_schema.pbtxt")
    args = parser.parse_args()
    stats = tfdv.generate_statistics_from_tfrecord(
        os.path.join(args.split_dir, "*"),
        stats_options=tfdv.StatsOptions())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tfdv.write_schema_text(propose(stats), args.output)
    print(args.output)


if __name__ == "__main__":
    main()
