"""Compact fingerprints of MNIST-style images, so that later runs can check new data against a
champion's training images without reading them: an exact hash (the first 8 bytes of the sha256
of the 784 pixels) and a perceptual one (the 7x7 average hash of the image's 4x4 blocks: 49 bits,
equal or a few bits apart for the same digit re-encoded, shifted by a pixel or lightly noised).

The pusher records them with every version it registers (components/registry.py, BASELINE_DIR).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

BLOCK = 4  # 28 / 4 = 7 blocks a side: a 49-bit average hash
BITS = (28 // BLOCK) ** 2


def exact_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 [N]: the first 8 bytes of each image's sha256."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.sha256(row.tobytes()).digest()[:8], "big") for row in images],
                    dtype=np.uint64)


def average_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 [N]: bit i set where block i is brighter than the image's mean block."""
    images = np.asarray(images, dtype=np.float32).reshape(len(images), 28 // BLOCK, BLOCK, 28 // BLOCK, BLOCK)
    blocks = images.mean(axis=(2, 4)).reshape(len(images), BITS)
    bits = blocks > blocks.mean(axis=1, keepdims=True)
    return (bits.astype(np.uint64) << np.arange(BITS, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def save(path: str, images: np.ndarray, labels: np.ndarray) -> str:
    """Both hashes of `images` with their labels, as an npz file at `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez_compressed(path, exact=exact_hashes(images), average=average_hashes(images),
                        labels=np.asarray(labels, dtype=np.int64))
    return path


def load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
