"""MnistExampleGen's executor: verified IDX files -> sharded GZIP TFRecords of tf.Examples.

The Beam pipeline works on ranges of records: each element names a file pair and a range, a
worker reads only that range from disk and writes it as one GZIP TFRecord file per split, named by
the range (a retried range writes the same file again), so no step holds the dataset in one
worker's memory and no record goes through a shuffle: writing each record through Beam's
WriteToTFRecord (a group-by-key over 70,000 elements) took 17 s of the stage on two cores; the
ranges take 5. A range's records are serialized at once by tfx_bsl's tf.Example encoder (from an
Arrow record batch) and compressed at zlib's fastest level: building each record as a
tf.train.Example in Python and compressing at zlib's default level were 80 % of the stage's work
(bench/README.md). `eval` is held out of the training file by a stable hash of the record index:
the same records every run, whatever the number of workers.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx_bsl.coders import example_coder

from components.mnist_example_gen import idx, sources

SPLITS = ("train", "eval", "test")
RECORDS_PER_SHARD = 5000
# zlib's fastest level: 2.8x faster than its default (6) on MNIST's records, the files 11 % larger.
GZIP_OPTIONS = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=1)
_HASH_BUCKETS = 10_000

# Parameter names (also used by component.py).
SOURCE = "source"
CACHE_DIR = "cache_dir"
EVAL_RATIO = "eval_ratio"
TRAIN_LIMIT = "train_limit"
TEST_LIMIT = "test_limit"
VERIFY_CHECKSUMS = "verify_checksums"
CLASS_NAMES = "class_names"  # JSON list; label i names class_names[i]
DEFAULT_CLASS_NAMES = [str(d) for d in range(idx.NUM_CLASSES)]


def is_eval(index: int, eval_ratio: float) -> bool:
    """Stable hold-out: a record's membership depends only on its index in the training file."""
    return zlib.crc32(b"mnist-train-%d" % index) % _HASH_BUCKETS < eval_ratio * _HASH_BUCKETS


def split_counts(n_train: int, n_test: int, eval_ratio: float) -> dict[str, int]:
    n_eval = sum(is_eval(i, eval_ratio) for i in range(n_train))
    return {"train": n_train - n_eval, "eval": n_eval, "test": n_test}


def to_example(image: np.ndarray, label: int) -> bytes:
    """One record: raw pixels plus cheap summaries that let TFDV see pixel statistics."""
    return range_examples(image[np.newaxis], np.array([label]))[0]


def _one_value_each(values: pa.Array) -> pa.ListArray:
    """A tf.Example feature's column with one value in every record."""
    return pa.ListArray.from_arrays(pa.array(np.arange(len(values) + 1, dtype=np.int32)), values)


def range_examples(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """The serialized records of a range (images uint8 [N, 28, 28], labels [N]): features image (the
    784 raw pixel bytes), label (int64), pixel_mean and ink_fraction (float), the summaries
    computed for the range at once."""
    pixels = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    count, size = pixels.shape
    # Integer sums: the same mean whichever way numpy would group a float sum.
    means = pixels.sum(axis=1, dtype=np.int64) / size
    ink = np.count_nonzero(pixels, axis=1) / size
    offsets = np.arange(count + 1, dtype=np.int32) * size
    image = pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(pixels)])
    columns = {"image": image, "label": pa.array(np.asarray(labels, dtype=np.int64)),
               "pixel_mean": pa.array(means.astype(np.float32)), "ink_fraction": pa.array(ink.astype(np.float32))}
    batch = pa.RecordBatch.from_arrays([_one_value_each(v) for v in columns.values()], list(columns))
    return example_coder.RecordBatchToExamplesEncoder().encode(batch)


def range_file(split_dir: str, part: str, start: int) -> str:
    """The file a range's records of one split go to: named by the range, so a retry rewrites it."""
    return os.path.join(split_dir, f"data_tfrecord-{part}-{start:06d}.gz")


class _WriteRange(beam.DoFn):
    """(part, start, stop) -> the range's records written, one GZIP file per split it holds;
    yields (split, records written)."""

    def __init__(self, headers: dict[str, idx.IdxHeader], eval_ratio: float, num_classes: int,
                 split_dirs: dict[str, str]) -> None:
        self._headers = headers
        self._eval_ratio = eval_ratio
        self._num_classes = num_classes
        self._split_dirs = split_dirs

    def process(self, shard: tuple[str, int, int]) -> Iterator[tuple[str, int]]:
        part, start, stop = shard
        images = idx.read_records(self._headers[f"{part}_images"], start, stop)
        labels_header = self._headers[f"{part}_labels"]
        labels = idx.read_records(labels_header, start, stop)
        idx.check_labels(labels_header.name, labels, start, self._num_classes)
        if part == "test":
            groups = {"test": np.ones(len(labels), dtype=bool)}
        else:
            held_out = np.array([is_eval(i, self._eval_ratio) for i in range(start, stop)], dtype=bool)
            groups = {"train": ~held_out, "eval": held_out}
        for split, chosen in groups.items():
            if chosen.any():
                with tf.io.TFRecordWriter(range_file(self._split_dirs[split], part, start),
                                          options=GZIP_OPTIONS) as writer:
                    for record in range_examples(images[chosen], labels[chosen]):
                        writer.write(record)
            yield split, int(chosen.sum())  # zeros too: every split's total is checked


def _shards(part: str, count: int) -> list[tuple[str, int, int]]:
    return [(part, s, min(s + RECORDS_PER_SHARD, count)) for s in range(0, count, RECORDS_PER_SHARD)]


def _check_count(split_written: tuple[str, int], expected: dict[str, int]) -> None:
    """Every record of a split written once: a lost or doubled range fails the stage."""
    split, written = split_written
    if written != expected[split]:
        raise RuntimeError(f"MnistExampleGen wrote {written} {split} records, expected {expected[split]}")


def read_headers(paths: dict[str, str], origins: dict[str, str] | None = None) -> dict[str, idx.IdxHeader]:
    """The four files' headers; errors name the user's file (`origins`) that each is a copy of."""
    headers = {key: idx.read_header(path, key.split("_")[1], (origins or {}).get(key, ""))
               for key, path in paths.items()}
    idx.check_pair(headers["train_images"], headers["train_labels"])
    idx.check_pair(headers["test_images"], headers["test_labels"])
    return headers


def _limited(count: int, limit: int) -> int:
    return min(count, limit) if limit > 0 else count


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        eval_ratio = float(exec_properties[EVAL_RATIO])
        verify = bool(exec_properties.get(VERIFY_CHECKSUMS, 1))
        class_names = json.loads(exec_properties.get(CLASS_NAMES) or "null") or DEFAULT_CLASS_NAMES
        origins: dict[str, str] = {}
        paths = sources.resolve_mnist(exec_properties.get(SOURCE) or "",
                                      os.path.expanduser(exec_properties[CACHE_DIR]), verify, origins)
        headers = read_headers(paths, origins)
        n_train = _limited(headers["train_images"].count, int(exec_properties.get(TRAIN_LIMIT) or 0))
        n_test = _limited(headers["test_images"].count, int(exec_properties.get(TEST_LIMIT) or 0))
        shards = _shards("train", n_train) + _shards("test", n_test)
        logging.info("MnistExampleGen: %d train-file and %d test-file records in %d shards",
                     n_train, n_test, len(shards))

        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        split_dirs = {split: artifact_utils.get_split_uri([examples], split) for split in SPLITS}
        for split_dir in split_dirs.values():
            fileio.makedirs(split_dir)
        counts = split_counts(n_train, n_test, eval_ratio)
        with self._make_beam_pipeline() as pipeline:
            written = (pipeline
                       | "Shards" >> beam.Create(shards)
                       | "Redistribute" >> beam.Reshuffle()
                       | "WriteRanges" >> beam.ParDo(_WriteRange(headers, eval_ratio, len(class_names), split_dirs))
                       | "CountPerSplit" >> beam.CombinePerKey(sum))
            _ = written | "CheckCounts" >> beam.Map(_check_count, counts)

        examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        examples.set_string_custom_property("split_counts", json.dumps(counts, sort_keys=True))
        examples.set_string_custom_property(
            "source_sha256", json.dumps({sources.MNIST_FILES[k].name: sources.file_digest(p, "sha256")
                                         for k, p in sorted(paths.items())}, sort_keys=True))
        examples.set_int_custom_property("checksums_verified", int(verify))
        examples.set_string_custom_property("class_names", json.dumps(class_names))
        logging.info("MnistExampleGen wrote %s to %s", counts, examples.uri)
