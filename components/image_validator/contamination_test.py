"""The contamination join on real MNIST digits: copies of test images (exact, re-encoded, noised,
moved by a pixel) among training images are found, and different writings of a digit whose
perceptual hashes collide are not counted, because every candidate is confirmed in pixel space."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from components import image_hashes as ih
from components.image_validator import contamination
from components.image_validator.geometry_test import real_images

SIMILARITY = 0.997


def join(test: np.ndarray, references: np.ndarray, hamming: int = 1, similarity: float = SIMILARITY,
         partitions: int = 4) -> contamination.CheckResult:
    """The join as the Beam pipeline runs it: probes and references split by partition, each joined."""
    probes, refs = defaultdict(list), defaultdict(list)
    for part, arrays in contamination.split_probes(
            contamination.probes(test, np.arange(len(test)), np.zeros(len(test), int), hamming), partitions):
        probes[part].append(arrays)
    found = ih.fingerprints(references, np.ones(len(references), int), np.arange(len(references)))
    for part, arrays in contamination.split_references(found, "train", partitions):
        refs[part].append(arrays)
    matches = [contamination.join_partition(probes[p], refs[p], similarity) for p in probes]
    return contamination.summarize(contamination.concatenate(matches), ("train",), "this_run", "train",
                                   len(test), len(references))


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out.append(np.array(Image.open(buffer)))
    return np.stack(out)


@pytest.fixture(scope="module")
def digits(mnist_cache):
    return real_images(mnist_cache, "t10k", 0, 400), real_images(mnist_cache, "train", 0, 6000)


def test_real_test_digits_are_not_copies_of_real_training_digits(digits):
    test, train = digits
    found = join(test, train)
    assert (found.contaminated, found.pairs) == (0, [])


@pytest.mark.parametrize("copy, expected", [
    ("exact", 1.0), ("jpeg q90", 0.98), ("brightness x0.8", 0.98), ("noise sd 5", 0.98),
    ("moved 1 pixel right", 1.0), ("moved 1 pixel up-left", 1.0)])
def test_copies_of_the_test_digits_among_the_training_digits_are_found(digits, copy, expected):
    test, train = digits
    rng = np.random.default_rng(0)
    copies = {"exact": lambda x: x, "jpeg q90": lambda x: jpeg(x, 90),
              "brightness x0.8": lambda x: (x * 0.8).astype(np.uint8),
              "noise sd 5": lambda x: np.clip(x + rng.normal(0, 5, x.shape), 0, 255).astype(np.uint8),
              "moved 1 pixel right": lambda x: ih.shifted(x, 0, 1),
              "moved 1 pixel up-left": lambda x: ih.shifted(x, -1, -1)}[copy](test[:200])
    found = join(test, np.concatenate([train, copies]))
    assert found.contaminated >= expected * 200 and found.contaminated <= 200 + 1
    assert found.exact == (200 if copy == "exact" else 0)
    pair = found.pairs[0]
    assert pair["ref_id"] - len(train) == pair["test_id"]  # the copy of that very test image
    assert pair["exact"] == (copy == "exact") and pair["similarity"] >= SIMILARITY - 1e-6


def test_colliding_hashes_of_different_digits_are_not_counted(digits):
    test, train = digits
    # Hundreds of (test, train) pairs share a hash here; none is the same image.
    test_hashes, train_hashes = ih.average_hashes(test), ih.average_hashes(train)
    colliding = int(sum((train_hashes == h).sum() for h in test_hashes))
    assert colliding > 500
    # Counted on the hash alone, most test images would be "copies"; confirmed in pixel space, none is.
    assert join(test, train, similarity=-1.0).contaminated > 0.5 * len(test)
    assert join(test, train).contaminated == 0


def test_one_test_image_counts_once_and_each_check_counts_its_own_sources(digits):
    test, _ = digits
    matches = [contamination.join_partition(
        [arrays], [refs], SIMILARITY)
        for (_, arrays), (_, refs) in zip(
            contamination.split_probes(contamination.probes(test[:5], np.arange(5), np.zeros(5, int), 1), 1),
            contamination.split_references(
                ih.fingerprints(np.concatenate([test[:5], test[:5]]), np.zeros(10, int), np.arange(10)), "train", 1),
            strict=True)]
    merged = contamination.concatenate(matches)
    assert len(merged["test_id"]) >= 10  # two copies of each of the five
    within = contamination.summarize(merged, ("train",), "this_run", "train", 5, 10)
    assert (within.contaminated, within.exact, within.near, within.share) == (5, 5, 0, 1.0)
    champion = contamination.summarize(merged, (contamination.CHAMPION,), "champion", "champion", 5, 10)
    assert champion.contaminated == 0
