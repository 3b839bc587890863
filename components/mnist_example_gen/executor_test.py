"""The real executor on real MNIST records: splits, counts, pixels, properties, bad input."""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

from components.mnist_example_gen import executor, idx
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
