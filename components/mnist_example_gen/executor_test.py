"""The real executor on real MNIST records: splits, counts, pixels, properties, bad input."""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

from components.mnist_example_gen import executor, idx, sources
from conftest import SMALL, run_example_gen


def _read_split(examples, split):
    pattern = os.path.join(examples.uri, f"Split-{split}", "*.gz")
    images, labels, means = [], [], []
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP"):
        ex = tf.train.Example.FromString(record.numpy())
        f = ex.features.feature
        images.append(np.frombuffer(f["image"].bytes_list.value[0], dtype=np.uint8))
        labels.append(f["label"].int64_list.value[0])
        means.append(f["pixel_mean"].float_list.value[0])
    return np.stack(images), np.array(labels), np.array(means)


def test_splits_counts_and_recorded_properties(small_examples):
    counts = json.loads(small_examples.get_string_custom_property("split_counts"))
    assert counts == executor.split_counts(SMALL["train_limit"], SMALL["test_limit"], SMALL["eval_ratio"])
    assert counts["train"] + counts["eval"] == SMALL["train_limit"] and counts["test"] == SMALL["test_limit"]
    assert 0.07 * SMALL["train_limit"] < counts["eval"] < 0.13 * SMALL["train_limit"]
    for split, n in counts.items():
        images, labels, _ = _read_split(small_examples, split)
        assert images.shape == (n, 784) and labels.shape == (n,)
    assert small_examples.split_names == '["train", "eval", "test"]'
    assert small_examples.get_string_custom_property("file_format") == "tfrecords_gzip"
    assert len(json.loads(small_examples.get_string_custom_property("source_sha256"))) == 4


def test_test_split_round_trips_the_idx_pixels(small_examples, mnist_cache):
    images, labels, means = _read_split(small_examples, "test")
    header = idx.read_header(str(mnist_cache / "t10k-images-idx3-ubyte"), "images")
    label_header = idx.read_header(str(mnist_cache / "t10k-labels-idx1-ubyte"), "labels")
    expected = idx.read_records(header, 0, SMALL["test_limit"]).reshape(-1, 784)
    # Shards may be written in any order: compare as sets of (pixels, label) rows.
    got = sorted(zip(map(bytes, images), labels.tolist(), strict=True))
    want = sorted(zip(map(bytes, expected), idx.read_records(label_header, 0, SMALL["test_limit"]).tolist(),
                      strict=True))
    assert got == want
    np.testing.assert_allclose(means, images.mean(axis=1), rtol=1e-5)


def test_eval_holdout_is_stable_and_disjoint(small_examples):
    train, _, _ = _read_split(small_examples, "train")
    evals, _, _ = _read_split(small_examples, "eval")
    assert not set(map(bytes, train)) & set(map(bytes, evals))
    held_out = [i for i in range(SMALL["train_limit"]) if executor.is_eval(i, SMALL["eval_ratio"])]
    assert held_out == [i for i in range(SMALL["train_limit"]) if executor.is_eval(i, SMALL["eval_ratio"])]
    assert len(held_out) == len(evals)


def test_wrong_magic_fails_ingest_naming_the_file(corrupt_source, tmp_path):
    name = "t10k-labels-idx1-ubyte"
    folder = corrupt_source(name, struct.pack(">II", 0x0BADBEEF, 10000) + bytes(10000))
    # The user's own file first, then the copy that was read (issue #16).
    with pytest.raises(idx.IdxFormatError, match=rf"^{re.escape(str(folder))}/{name}(\.gz)? \(read from its "
                       rf"uncompressed copy .*/{name}\): wrong magic number 0x0badbeef"):
        run_example_gen(tmp_path / "out", tmp_path / "cache", source=str(folder), verify_checksums=0)
    assert not (tmp_path / "out" / "Split-test").exists()


def test_truncated_images_fail_ingest_naming_the_file(corrupt_source, mnist_cache, tmp_path):
    name = "train-images-idx3-ubyte"
    folder = corrupt_source(name, (mnist_cache / name).read_bytes()[:50_000])
    with pytest.raises(idx.IdxFormatError, match=rf"^{re.escape(str(folder))}/{name}.*\): truncated"):
        run_example_gen(tmp_path / "out", tmp_path / "cache", source=str(folder), verify_checksums=0)


def _expected_example(image: np.ndarray, label: int) -> tf.train.Example:
    """The record the trainers, TFDV and the schema expect, built field by field as a tf.train.Example."""
    pixels = image.reshape(-1)
    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels.tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "pixel_mean": tf.train.Feature(float_list=tf.train.FloatList(value=[int(pixels.sum()) / pixels.size])),
        "ink_fraction": tf.train.Feature(float_list=tf.train.FloatList(
            value=[np.count_nonzero(pixels) / pixels.size]))}))


def test_a_record_is_the_tf_example_the_schema_describes(mnist_cache):
    """The batch encoder (tfx_bsl, from Arrow) writes what the record built field by field holds:
    pixels, label and both summaries (as float32), for every image of a range, blank and full ones too."""
    headers = executor.read_headers({key: str(mnist_cache / spec.name) for key, spec in
                                     sources.MNIST_FILES.items()})
    images = np.concatenate([idx.read_records(headers["train_images"], 0, 50),
                             np.zeros((1, 28, 28), np.uint8), np.full((1, 28, 28), 255, np.uint8)])
    labels = np.concatenate([idx.read_records(headers["train_labels"], 0, 50), [0, 9]]).astype(np.uint8)
    encoded = executor.range_examples(images, labels)
    assert len(encoded) == len(labels)
    for record, image, label in zip(encoded, images, labels, strict=True):
        assert tf.train.Example.FromString(record) == _expected_example(image, label)
    assert tf.train.Example.FromString(executor.to_example(images[7], int(labels[7]))) == \
        _expected_example(images[7], labels[7])


def test_each_range_writes_its_own_files_and_a_retry_rewrites_them(small_examples, mnist_cache, tmp_path):
    """A range's records go to files named by the range, in index order, each record the tf.Example
    of its image and label (the range's summaries computed at once); running the range again (a
    retried worker) leaves the same files with the same records."""
    headers = executor.read_headers({key: str(mnist_cache / spec.name) for key, spec in
                                     sources.MNIST_FILES.items()})
    split_dirs = {split: str(tmp_path / split) for split in executor.SPLITS}
    for folder in split_dirs.values():
        os.makedirs(folder)
    write = executor._WriteRange(headers, SMALL["eval_ratio"], 10, split_dirs)
    first = list(write.process(("train", 100, 300)))
    names = {split: sorted(os.listdir(folder)) for split, folder in split_dirs.items()}
    records = {split: [r.numpy() for r in tf.data.TFRecordDataset(
        [os.path.join(split_dirs[split], n) for n in names[split]], compression_type="GZIP")] for split in names}
    assert list(write.process(("train", 100, 300))) == first
    assert {split: sorted(os.listdir(folder)) for split, folder in split_dirs.items()} == names
    assert names == {"train": ["data_tfrecord-train-000100.gz"], "eval": ["data_tfrecord-train-000100.gz"],
                     "test": []}
    images = idx.read_records(headers["train_images"], 100, 300)
    labels = idx.read_records(headers["train_labels"], 100, 300)
    held_out = [executor.is_eval(i, SMALL["eval_ratio"]) for i in range(100, 300)]
    for split, want_eval in (("train", False), ("eval", True)):
        expected = [_expected_example(image, label) for image, label, e in zip(images, labels, held_out, strict=True)
                    if e == want_eval]
        parsed = [tf.train.Example.FromString(r) for r in records[split]]  # a map's bytes come in any order
        assert parsed == expected and dict(first)[split] == len(expected)


def test_a_split_with_a_lost_or_doubled_range_fails_the_stage():
    executor._check_count(("eval", 4), {"train": 9, "eval": 4})
    for written in (3, 5):
        with pytest.raises(RuntimeError, match=f"MnistExampleGen wrote {written} eval records, expected 4"):
            executor._check_count(("eval", written), {"train": 9, "eval": 4})
