"""Every bad input of issue 3 through the real MnistExampleGen executor: each one stops the ingest
with an error that names the file and the problem, and writes no examples.

The data sets are built here from real MNIST records with `conftest.write_idx` (small, so each case
takes a second); the schema/drift cases (shifted labels, inverted images) are in
test_data_drift_e2e.py, through a whole LocalDagRunner run.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from components.mnist_example_gen import idx, sources
from components.mnist_example_gen.sources import MNIST_FILES
from conftest import run_example_gen, write_idx

N_TRAIN, N_TEST = 600, 200


def real_records(cache: Path, part: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n (images, labels) of the real 'train' or 't10k' files."""
    images = idx.read_header(str(cache / f"{part}-images-idx3-ubyte"), "images")
    labels = idx.read_header(str(cache / f"{part}-labels-idx1-ubyte"), "labels")
    return idx.read_records(images, 0, n), idx.read_records(labels, 0, n)


def idx_folder(folder: Path, cache: Path, transform: Callable[[np.ndarray, np.ndarray], tuple] | None = None,
               n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """A source folder of the four .gz files holding real records, optionally transformed."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test)):
        images, labels = real_records(cache, "t10k" if part == "test" else "train", n)
        if transform is not None:
            images, labels = transform(images, labels)
        write_idx(str(folder / (MNIST_FILES[f"{part}_images"].name + ".gz")), images)
        write_idx(str(folder / (MNIST_FILES[f"{part}_labels"].name + ".gz")), labels)
    return folder


def _replace(folder: Path, name: str, content: bytes) -> str:
    """Puts `content` in place of NAME.gz (as NAME.gz when it looks like gzip, else raw NAME)."""
    (folder / f"{name}.gz").unlink()
    path = folder / name
    path.write_bytes(content)
    return str(path)


def _gz(folder: Path, name: str) -> bytes:
    return (folder / f"{name}.gz").read_bytes()


def _raw(folder: Path, name: str) -> bytes:
    return gzip.decompress(_gz(folder, name))


TRAIN_IMAGES, TRAIN_LABELS = MNIST_FILES["train_images"].name, MNIST_FILES["train_labels"].name
TEST_IMAGES, TEST_LABELS = MNIST_FILES["test_images"].name, MNIST_FILES["test_labels"].name


def _truncated_gzip(folder: Path) -> str:
    path = folder / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:5000])
    return str(path)


def _not_gzip(folder: Path) -> str:
    path = folder / f"{TEST_LABELS}.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    return str(path)


def _swapped(folder: Path) -> str:
    images, labels = _gz(folder, TEST_IMAGES), _gz(folder, TEST_LABELS)
    (folder / f"{TEST_IMAGES}.gz").write_bytes(labels)
    (folder / f"{TEST_LABELS}.gz").write_bytes(images)
    return TEST_IMAGES


def _labels_out_of_range(folder: Path) -> str:
    labels = np.frombuffer(_raw(folder, TRAIN_LABELS)[8:], dtype=np.uint8).copy()
    labels[123] = 10
    write_idx(str(folder / f"{TRAIN_LABELS}.gz"), labels)
    return TRAIN_LABELS


BAD_INPUTS = {
    # case: (how to break the folder -> the file the error must name, what it must say)
    "truncated-gzip": (_truncated_gzip, "not a readable gzip file"),
    "not-gzip": (_not_gzip, "not a readable gzip file"),
    "wrong-magic": (lambda f: _replace(f, TEST_LABELS, struct.pack(">II", 0x0BADBEEF, N_TEST) + bytes(N_TEST)),
                    "wrong magic number 0x0badbeef"),
    "not-28x28": (lambda f: _replace(f, TEST_IMAGES, struct.pack(">IIII", idx.IMAGE_MAGIC, N_TEST, 32, 32)
                                     + bytes(N_TEST * 32 * 32)), "images are 32x32, expected 28x28"),
    "count-mismatch": (lambda f: _replace(f, TRAIN_LABELS, _raw(f, TRAIN_LABELS)[:8 + N_TRAIN - 1]),
                       "truncated: the header declares 600 records"),
    "count-mismatch-headers": (lambda f: _replace(f, TRAIN_LABELS, struct.pack(">II", idx.LABEL_MAGIC, N_TRAIN - 1)
                                                  + _raw(f, TRAIN_LABELS)[8:8 + N_TRAIN - 1]),
                               f"599 labels but .*{TRAIN_IMAGES}.* has 600 images"),
    "labels-outside-0-9": (_labels_out_of_range, "label 10 at record 123 is outside 0-9"),
    "empty-file": (lambda f: _replace(f, TEST_IMAGES, b""), "the file is empty"),
    "images-labels-swapped": (_swapped, "are the files swapped"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_ingest_naming_the_file(case, mnist_cache, tmp_path):
    break_folder, message = BAD_INPUTS[case]
    folder = idx_folder(tmp_path / "source", mnist_cache)
    named = os.path.basename(break_folder(folder))
    out = tmp_path / "examples"
    # Errors raised inside the Beam pipeline (labels) reach us wrapped in a RuntimeError by Beam.
    with pytest.raises((idx.IdxFormatError, sources.SourceError, RuntimeError), match=message) as err:
        run_example_gen(out, tmp_path / "cache", source=str(folder), verify_checksums=0)
    assert named in str(err.value)
    # The user's own file (in their folder), not only the cache's copy of it (issue #16).
    assert str(folder / named) in str(err.value) or str(folder / f"{named}.gz") in str(err.value), str(err.value)
    assert not list(out.glob("Split-*/*.gz")), "no examples may be written from bad input"


def test_checksum_mismatch_stops_ingest_naming_the_file(mnist_cache, tmp_path):
    """Verification on (the default): real records, but not the canonical files."""
    folder = idx_folder(tmp_path / "source", mnist_cache)
    with pytest.raises(sources.ChecksumError, match=rf"{TRAIN_IMAGES}\.gz: md5 checksum mismatch"):
        run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder))
    assert not (tmp_path / "cache" / TRAIN_IMAGES).exists()
