"""Compact fingerprints of MNIST-style images, so that a run can check its test images against
training images it cannot read (a champion's): per image an exact hash (the first 8 bytes of the
sha256 of the 784 pixels), a perceptual hash (the 7x7 average hash of the image's 4x4 blocks: 49
bits) and a 14x14 thumbnail (the rounded means of its 2x2 blocks: 196 bytes), the pixel space in
which a candidate pair that the hashes found is confirmed.

Measured on real MNIST (bench/README.md, "Gates"): a JPEG re-encoding, brightness change or light
noise keeps the average hash equal or one bit apart in 97-100 % of images, a one-pixel shift keeps
it equal in only 4 %, so shifts are found by hashing the shifted image instead (contamination.py).

ImageValidator writes them for every split (`image_hashes.npz`, components/image_checks.py); the
registry keeps the training split's with each version.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np
import tensorflow as tf

SIDE = 28
BLOCK = 4  # 28 / 4 = 7 blocks a side: a 49-bit average hash
BITS = (SIDE // BLOCK) ** 2
THUMBNAIL_BLOCK = 2  # 14x14 thumbnails
THUMBNAIL_SIDE = SIDE // THUMBNAIL_BLOCK
# The fingerprint file's arrays.
IDS, LABELS, EXACT, AVERAGE, THUMBNAILS = "ids", "labels", "exact", "average", "thumbnails"


def _as_images(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), SIDE, SIDE)


def exact_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 [N]: the first 8 bytes of each image's sha256."""
    rows = _as_images(images).reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.sha256(row.tobytes()).digest()[:8], "big") for row in rows],
                    dtype=np.uint64).reshape(len(rows))


def halved(sums: np.ndarray) -> np.ndarray:
    """[N, S, S] -> [N, S/2, S/2]: the sums of 2x2 squares (two strided adds, columns then rows:
    several times faster than numpy's reshaped sum)."""
    columns = sums[:, :, 0::2] + sums[:, :, 1::2]
    return columns[:, 0::2] + columns[:, 1::2]


def thumbnail_sums(images: np.ndarray) -> np.ndarray:
    """uint16 [N, 14, 14]: the sum of each 2x2 block of pixels."""
    return halved(_as_images(images).astype(np.uint16))


def average_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 [N]: bit i set where 4x4 block i is brighter than the image's mean block (integer
    arithmetic: block sum * 49 > the image's sum)."""
    return hash_bits(halved(thumbnail_sums(images)))


def hash_bits(sums: np.ndarray) -> np.ndarray:
    """The average hash of 7x7 block sums [N, 7, 7]."""
    flat = sums.reshape(len(sums), BITS).astype(np.int64)
    bits = flat * BITS > flat.sum(axis=1, keepdims=True)
    return (bits.astype(np.uint64) << np.arange(BITS, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def thumbnails(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 196]: each image's 14x14 thumbnail, the rounded mean of its 2x2 blocks."""
    return thumbnails_of(thumbnail_sums(images))


def thumbnails_of(sums: np.ndarray) -> np.ndarray:
    return ((sums + 2) // 4).astype(np.uint8).reshape(len(sums), THUMBNAIL_SIDE * THUMBNAIL_SIDE)


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The images moved down by dy and right by dx pixels, the uncovered border black."""
    images = _as_images(images)
    out = np.zeros_like(images)
    out[:, max(dy, 0):SIDE + min(dy, 0), max(dx, 0):SIDE + min(dx, 0)] = \
        images[:, max(-dy, 0):SIDE + min(-dy, 0), max(-dx, 0):SIDE + min(-dx, 0)]
    return out


def fingerprints(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Every fingerprint of `images`, with their labels and ids, as the arrays the file holds."""
    sums = thumbnail_sums(images)
    return {IDS: np.asarray(ids, dtype=np.int64), LABELS: np.asarray(labels, dtype=np.int64),
            EXACT: exact_hashes(images), AVERAGE: hash_bits(halved(sums)), THUMBNAILS: thumbnails_of(sums)}


def save(path: str, images: np.ndarray, labels: np.ndarray) -> str:
    """Every fingerprint of `images` with their labels as an npz file at `path` (ids: file order)."""
    return save_arrays(path, fingerprints(images, labels, np.arange(len(images))))


def save_arrays(path: str, arrays: dict[str, np.ndarray]) -> str:
    """`arrays` as a compressed npz file at `path` (local or an object store's URI), as
    np.savez_compressed writes it but at zlib's fastest level: 4x faster on MNIST's fingerprints,
    and about as small (mostly zeros)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, values in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(values), allow_pickle=False)
    folder = os.path.dirname(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def count(path: str) -> int:
    """How many images a fingerprint file holds (reads only its ids)."""
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as data:
        return len(data[IDS])


def load(path: str) -> dict[str, np.ndarray]:
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as data:
        return {key: data[key] for key in data.files}
