"""IDX parsing on the real MNIST files, and on broken ones: each error names the file."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from components.mnist_example_gen import idx

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_files_headers_and_label_counts(mnist_cache):
    for part, n, counts in (("train", 60000, TRAIN_LABEL_COUNTS), ("t10k", 10000, TEST_LABEL_COUNTS)):
        images = idx.read_header(str(mnist_cache / f"{part}-images-idx3-ubyte"), "images")
        labels = idx.read_header(str(mnist_cache / f"{part}-labels-idx1-ubyte"), "labels")
        idx.check_pair(images, labels)
        assert images.count == labels.count == n
        assert np.bincount(idx.read_records(labels, 0, n), minlength=10).tolist() == counts


def test_training_pixel_statistics_match_the_published_ones(mnist_cache):
    header = idx.read_header(str(mnist_cache / "train-images-idx3-ubyte"), "images")
    pixels = idx.read_records(header, 0, header.count)
    assert pixels.shape == (60000, 28, 28)
    assert pixels.mean() == pytest.approx(33.318, abs=1e-3)
    assert pixels.std() == pytest.approx(78.567, abs=1e-3)


def test_range_reads_equal_a_whole_read(mnist_cache):
    header = idx.read_header(str(mnist_cache / "t10k-images-idx3-ubyte"), "images")
    whole = idx.read_records(header, 0, 300)
    np.testing.assert_array_equal(np.concatenate([idx.read_records(header, 0, 120),
                                                  idx.read_records(header, 120, 300)]), whole)


def _images_file(tmp_path, magic=idx.IMAGE_MAGIC, n=3, rows=28, cols=28, payload=None):
    path = tmp_path / "images-idx3-ubyte"
    body = payload if payload is not None else bytes(n * rows * cols)
    path.write_bytes(struct.pack(">IIII", magic, n, rows, cols) + body)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: _images_file(p, magic=0x1234), "wrong magic number 0x00001234"),
    (lambda p: _images_file(p, magic=idx.LABEL_MAGIC), "are the files swapped"),
    (lambda p: _images_file(p, rows=32, cols=32), "images are 32x32, expected 28x28"),
    (lambda p: _images_file(p, payload=bytes(100)), "truncated: the header declares 3 records"),
    (lambda p: _images_file(p, payload=bytes(3 * 784 + 5)), "has trailing bytes"),
])
def test_broken_image_files_name_the_file_and_the_problem(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(idx.IdxFormatError, match=message) as err:
        idx.read_header(path, "images")
    assert str(err.value).startswith(path)


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"\x1f\x8b\x08\x00rest", "still gzip-compressed"),
    (b"\x00\x00", "truncated header"),
])
def test_unreadable_label_files(tmp_path, content, message):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(idx.IdxFormatError, match=message):
        idx.read_header(str(path), "labels")


def test_counts_that_disagree_and_labels_out_of_range(tmp_path):
    images = idx.read_header(_images_file(tmp_path, n=3), "images")
    labels_path = tmp_path / "labels-idx1-ubyte"
    labels_path.write_bytes(struct.pack(">II", idx.LABEL_MAGIC, 2) + bytes([1, 12]))
    labels = idx.read_header(str(labels_path), "labels")
    with pytest.raises(idx.IdxFormatError, match="2 labels but .* has 3 images"):
        idx.check_pair(images, labels)
    with pytest.raises(idx.IdxFormatError, match="label 12 at record 1 is outside 0-9"):
        idx.check_labels(str(labels_path), idx.read_records(labels, 0, 2), 0)
