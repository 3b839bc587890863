"""ImageValidator's Beam pipeline: one pass over every split's images, in batches (numpy arrays,
not one element per image), that

- sums each split's image summary (mean image, centre-of-mass and bounding-box histograms:
  geometry.py) and writes it as `Split-<split>/FeatureStats.pb` + `image_moments.npz`;
- writes every image's fingerprints (components/image_hashes.py) as `Split-<split>/image_hashes.npz`;
- joins the test split's probes with the reference images (this run's train and eval splits, the
  champion's training images when it has their fingerprints) by hash partition, confirms the
  candidates (contamination.py) and writes the confirmed matches (with the pictures of each pair:
  the test image and the thumbnail it matched) to `work_dir`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam import pvalue

from components import image_checks
from components import image_hashes as ih
from components.image_validator import contamination, geometry
from trainers import common

BATCH = 4096  # images per element
ROW_BITS = 32  # a record's id: its file's index in the split, then its row in the file
FINGERPRINTS, JOIN = "fingerprints", "join"
MATCHES_FILE = "matches.npz"
WITHIN_RUN_SOURCES = ("train", "eval")


def split_files(pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(pattern))


def record_id(file_index: int, rows: np.ndarray) -> np.ndarray:
    return (np.int64(file_index) << ROW_BITS) + rows.astype(np.int64)


def describe_record(record: int, files: int = 1) -> str:
    """A record as a person finds it: its row in the split's file (and the file, if several)."""
    file_index, row = record >> ROW_BITS, record & ((1 << ROW_BITS) - 1)
    return f"#{row}" if files <= 1 else f"#{row} of file {file_index}"


class _ReadFile(beam.DoFn):
    """(split, file index, path) -> batches {split, images uint8 [B, 28, 28], labels, ids}, parsed as
    the trainers parse them (common.parse_batch), op by op: a tf.data map per file would trace its
    function anew for each of the split's files (0.6 s of the stage's 5 on full MNIST). Not
    common.records: its parallel interleave and glob read one file 2.5x slower."""

    def setup(self) -> None:
        self._spec = common.image_and_label_spec()

    def process(self, element: tuple[str, int, str]) -> Iterator[dict[str, Any]]:
        split, file_index, path = element
        row = 0
        for serialized in tf.data.TFRecordDataset([path], compression_type="GZIP").batch(BATCH):
            images, labels = (tensor.numpy() for tensor in common.parse_batch(serialized, self._spec))
            yield {"split": split, "images": images, "labels": labels,
                   "ids": record_id(file_index, np.arange(row, row + len(labels)))}
            row += len(labels)


class _Analyse(beam.DoFn):
    """A batch -> its summary (main output), its fingerprints, and its share of every hash partition
    of the join: probes for the test split, references for this run's train and eval splits."""

    def __init__(self, test_split: str, hamming: int, partitions: int) -> None:
        self._test_split, self._hamming, self._partitions = test_split, hamming, partitions

    def process(self, batch: dict[str, Any]) -> Iterator[Any]:
        split, images, labels, ids = batch["split"], batch["images"], batch["labels"], batch["ids"]
        yield split, geometry.summarize(images)
        found = ih.fingerprints(images, labels, ids)
        yield pvalue.TaggedOutput(FINGERPRINTS, (split, found))
        if split == self._test_split:
            for part, arrays in contamination.split_probes(contamination.probes(images, ids, labels, self._hamming),
                                                           self._partitions):
                yield pvalue.TaggedOutput(JOIN, (part, ("probe", arrays)))
        if split in WITHIN_RUN_SOURCES:
            for part, arrays in contamination.split_references(found, split, self._partitions):
                yield pvalue.TaggedOutput(JOIN, (part, ("ref", arrays)))


def _write_summary(element: tuple[str, geometry.ImageSummary], output_uri: str) -> None:
    split, summary = element
    folder = os.path.join(output_uri, f"Split-{split}")
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(os.path.join(folder, image_checks.FEATURE_STATS_FILE), "wb") as f:
        f.write(geometry.to_statistics(split, summary).SerializeToString())
    ih.save_arrays(os.path.join(folder, image_checks.MOMENTS_FILE), geometry.moments(summary))


def _write_fingerprints(element: tuple[str, list[dict[str, np.ndarray]]], output_uri: str) -> None:
    split, parts = element
    joined = contamination.concatenate(parts)
    order = np.argsort(joined[ih.IDS], kind="stable")
    ih.save_arrays(os.path.join(output_uri, f"Split-{split}", image_checks.HASHES_FILE),
                         {name: values[order] for name, values in joined.items()})


def _join(element: tuple[int, list[tuple[str, dict]]], similarity: float) -> dict[str, np.ndarray]:
    _, parts = element
    return contamination.join_partition([a for kind, a in parts if kind == "probe"],
                                        [a for kind, a in parts if kind == "ref"], similarity)


def _all_matches(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["test_id"])]
    return contamination.concatenate(parts) if parts else contamination.empty_matches()


def _save(value: dict[str, np.ndarray], path: str) -> None:
    ih.save_arrays(path, value)


def _champion_references(path: str, partitions: int) -> Iterator[tuple[int, tuple[str, dict[str, np.ndarray]]]]:
    """The champion's fingerprints, read where the pipeline runs (not pickled into its graph), by partition."""
    for part, arrays in contamination.split_references(ih.load(path), contamination.CHAMPION, partitions):
        yield part, ("ref", arrays)


def build(pipeline: beam.Pipeline, files: dict[str, list[str]], output_uri: str, work_dir: str, *,
          test_split: str, champion_fingerprints: str, similarity: float, hamming: int,
          partitions: int = contamination.PARTITIONS) -> None:
    """Adds the image checks to `pipeline`: summaries and fingerprints of every split of `files`
    ({split: its TFRecord files}) into `output_uri`, the confirmed matches into `work_dir`;
    `champion_fingerprints`: the champion's image_hashes.npz ("" = none)."""
    batches = (pipeline
               | "Files" >> beam.Create([(split, k, path) for split, paths in sorted(files.items())
                                         for k, path in enumerate(paths)])
               | "Read" >> beam.ParDo(_ReadFile()))
    analysed = batches | "Analyse" >> beam.ParDo(_Analyse(test_split, hamming, partitions)).with_outputs(
        FINGERPRINTS, JOIN, main="summaries")
    _ = (analysed.summaries
         | "SumPerSplit" >> beam.CombinePerKey(lambda parts: sum(parts, geometry.ImageSummary()))
         | "WriteSummaries" >> beam.Map(_write_summary, output_uri))
    _ = (analysed[FINGERPRINTS]
         | "FingerprintsPerSplit" >> beam.GroupByKey()
         | "WriteFingerprints" >> beam.Map(_write_fingerprints, output_uri))
    join_inputs = [analysed[JOIN]]
    if champion_fingerprints:
        join_inputs.append(pipeline
                           | "Champion" >> beam.Create([champion_fingerprints])
                           | "ChampionPartitions" >> beam.FlatMap(_champion_references, partitions))
    matches = (join_inputs
               | "JoinInputs" >> beam.Flatten()
               | "ByPartition" >> beam.GroupByKey()
               | "Confirm" >> beam.Map(_join, similarity)
               | "AllMatches" >> beam.CombineGlobally(_all_matches))
    _ = matches | "WriteMatches" >> beam.Map(_save, os.path.join(work_dir, MATCHES_FILE))
