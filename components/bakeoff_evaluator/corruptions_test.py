"""The corrupted test copy: deterministic per record, whatever the batching and the order."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy import ndimage

from components.bakeoff_evaluator import corruptions
from conftest import mnist_file

# The first 200 test-file images, each with its index as the record: the whole suite's checksum. It
# changes only when the corruptions do (and then evaluation.json's robustness.sha256 changes too).
GOLDEN = "17b524860ab7a2780f60d69c5b41573a0d097629cd9d5815b00e72b4fb165cdc"


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    path = mnist_file(mnist_dir, "t10k-images-idx3-ubyte")
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:300].copy()


def _records(images):
    return [i.to_bytes(4, "big") + image.tobytes() for i, image in enumerate(images)]


def _suite_sha256(out):
    return corruptions.combined_sha256({c: f"{corruptions.xor_digests(out[c]):064x}" for c in corruptions.NAMES})


def test_same_record_same_corruption_whatever_the_batch_or_order(test_images):
    keys = corruptions.record_keys(_records(test_images))
    whole = corruptions.corrupt(test_images, keys)
    assert list(whole) == list(corruptions.NAMES)
    for c, images in whole.items():
        assert images.dtype == np.uint8 and images.shape == test_images.shape, c
        assert (images != test_images).any(), c
    order = np.random.default_rng(5).permutation(len(test_images))
    pieces = [order[i:i + 37] for i in range(0, len(order), 37)]  # shuffled, uneven batches
    for piece in pieces:
        part = corruptions.corrupt(test_images[piece], keys[piece])
        for c in corruptions.NAMES:
            assert (part[c] == whole[c][piece]).all(), c
    # The checksum is order-independent, and the same in a second computation.
    shuffled = corruptions.corrupt(test_images[order], keys[order])
    assert _suite_sha256(shuffled) == _suite_sha256(whole) == _suite_sha256(corruptions.corrupt(test_images, keys))


def test_another_seed_another_copy(test_images):
    keys = corruptions.record_keys(_records(test_images))
    one, two = corruptions.corrupt(test_images, keys, seed=1), corruptions.corrupt(test_images, keys, seed=2)
    for c in ("shift", "rotate", "gaussian_noise", "occlusion"):  # the per-image random ones
        assert (one[c] != two[c]).any(), c
    for c in ("blur", "contrast"):  # fixed severity, nothing random
        assert (one[c] == two[c]).all(), c
    assert _suite_sha256(one) != _suite_sha256(two)


def test_shift_and_rotate_are_scipy_ndimage_s(test_images):
    """The vectorised resampling equals scipy.ndimage.shift / rotate (bilinear, zero outside) per image."""
    images = test_images[:40]
    keys = corruptions.record_keys(_records(images))
    u = corruptions.uniforms(keys)
    out = corruptions.corrupt(images, keys)
    x = images.astype(np.float64)
    direction = 2 * np.pi * u[:, 0]
    low, high = corruptions.ROTATE_DEGREES
    degrees = (low + (high - low) * u[:, 1]) * np.where(u[:, 2] < 0.5, -1.0, 1.0)
    for i in range(len(images)):
        shifted = ndimage.shift(x[i], (corruptions.SHIFT_PIXELS * np.sin(direction[i]),
                                       corruptions.SHIFT_PIXELS * np.cos(direction[i])),
                                order=1, mode="grid-constant", cval=0.0)
        assert (corruptions._to_uint8(shifted) == out["shift"][i]).all(), i
        # scipy's angle turns the other way round in row/column coordinates.
        rotated = ndimage.rotate(x[i], -degrees[i], reshape=False, order=1, mode="grid-constant", cval=0.0)
        assert (corruptions._to_uint8(rotated) == out["rotate"][i]).all(), i
        assert low <= abs(degrees[i]) <= high
    blurred = ndimage.gaussian_filter(x, sigma=(0, corruptions.BLUR_SIGMA, corruptions.BLUR_SIGMA), mode="constant")
    assert (corruptions._to_uint8(blurred) == out["blur"]).all()


def test_occlusion_and_noise(test_images):
    keys = corruptions.record_keys(_records(test_images))
    out = corruptions.corrupt(test_images, keys)
    size, margin = corruptions.OCCLUSION_SIZE, corruptions.OCCLUSION_MARGIN
    for i in range(len(test_images)):
        changed = out["occlusion"][i] != test_images[i]
        assert (out["occlusion"][i][changed] == 0).all()
        rows, cols = np.nonzero(changed)
        if rows.size:  # the square may fall on background only
            assert rows.min() >= margin and rows.max() < 28 - margin and rows.max() - rows.min() < size
            assert cols.min() >= margin and cols.max() < 28 - margin and cols.max() - cols.min() < size
    noise = out["gaussian_noise"].astype(float) - test_images
    background = test_images == 0
    assert 20 < noise[background].mean() < 35  # |N(0, 64)| clipped at 0: about 25
    assert corruptions.noise_bank().shape == (corruptions.NOISE_BANK, 28, 28)


def test_the_suite_is_pinned(test_images):
    """The corrupted copy of a fixed set of records is a fixed set of images (this machine's numpy/scipy):
    a change to the suite must be deliberate, and then GOLDEN in this test changes with it."""
    images = test_images[:200]
    out = corruptions.corrupt(images, corruptions.record_keys(_records(images)))
    assert _suite_sha256(out) == GOLDEN


def test_assignment_each_example_its_share_of_the_corruptions(test_images):
    keys = corruptions.record_keys(_records(test_images))
    n, c = len(keys), len(corruptions.NAMES)
    for per_example in range(c + 1):
        assigned = corruptions.assignment(keys, per_example)
        assert assigned.shape == (c, n) and (assigned.sum(axis=0) == per_example).all()
        if 0 < per_example < c:  # spread over the corruptions: about n * per_example / c each
            expected = n * per_example / c
            assert (abs(assigned.sum(axis=1) - expected) < 4 * np.sqrt(expected)).all(), assigned.sum(axis=1)
    # Per record: the same examples get the same corruptions in any batch.
    one = corruptions.assignment(keys, 1)
    assert (corruptions.assignment(keys[::-1], 1) == one[:, ::-1]).all()
    assert (corruptions.assignment(keys, 1, seed=7) != one).any()
    # Only the assigned images are made, and each is the one the full suite makes.
    partial = corruptions.corrupt(test_images, keys, assigned=one)
    full = corruptions.corrupt(test_images, keys)
    for k, name in enumerate(corruptions.NAMES):
        assert (partial[name] == full[name][one[k]]).all(), name
    with pytest.raises(ValueError, match="corruptions_per_example"):
        corruptions.assignment(keys, 7)
