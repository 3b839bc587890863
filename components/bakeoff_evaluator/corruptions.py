"""A deterministic corrupted copy of the test split: the robustness suite every model is scored on.

Each corruption is a function of the image and of numbers drawn from (SEED, the sha256 of the
example's serialized record): the same record always gets the same corrupted image, whatever the
batch it arrives in, the order the runner reads the files in or the worker that scores it.

The copy is made once per run, inside the scoring DoFn (scoring.py), from the batch it has just
parsed: the clean and the corrupted images are scored by the same models in the same element of
the same Beam pass (one read of the split). Nothing is written out but the models' predictions on
it, a few examples for the report and a checksum of the corrupted images (order-independent, like
the examples' own: the XOR of each corrupted image's sha256, per corruption, then one sha256 of
those).

Severities are fixed (below); the parameters that vary per image (direction of the shift, sign and
size of the angle, which noise field, where the occluding square goes) come from those numbers.
Images stay uint8 [28, 28], what the exported models take.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from scipy import ndimage

SEED = 20261127
SHIFT_PIXELS = 3.0
ROTATE_DEGREES = (20.0, 30.0)
NOISE_STD = 0.25 * 255
BLUR_SIGMA = 1.2
CONTRAST = 0.3
OCCLUSION_SIZE = 10
OCCLUSION_MARGIN = 4  # the square stays inside the 20x20 box MNIST centres its digits in
NOISE_BANK = 1024
# How many of the corruptions each test example is scored under (0..6; 0: off). 1: the corrupted copy is
# as big as the split (each example once, under one corruption, about N/6 per corruption), which
# costs about one more scoring pass; 6: every example under every corruption, six more passes.
DEFAULT_PER_EXAMPLE = 1
NOT_SCORED = 255  # a prediction's place for an example that was not given that corruption

# name -> what it does, in words (recorded in evaluation.json and shown in the report).
CORRUPTIONS: dict[str, str] = {
    "shift": f"moved {SHIFT_PIXELS:g} pixels in a random direction (bilinear)",
    "rotate": f"rotated by {ROTATE_DEGREES[0]:g} to {ROTATE_DEGREES[1]:g} degrees, either way (bilinear)",
    "gaussian_noise": f"Gaussian noise, standard deviation {NOISE_STD:g} of 255, clipped (one of "
                      f"{NOISE_BANK} fields drawn from the seed)",
    "blur": f"Gaussian blur, sigma {BLUR_SIGMA:g} pixels",
    "contrast": f"contrast scaled to {CONTRAST:g} around the image's mean",
    "occlusion": f"a {OCCLUSION_SIZE}x{OCCLUSION_SIZE} black square erases part of the digit (random place)",
}
NAMES = tuple(CORRUPTIONS)


def record_keys(records: list[bytes]) -> np.ndarray:
    """A 64-bit key per serialized record (the first 8 bytes of its sha256): what seeds its corruption."""
    return np.array([int.from_bytes(hashlib.sha256(r).digest()[:8], "big") for r in records], dtype=np.uint64)


def uniforms(keys: np.ndarray, seed: int = SEED, count: int = 6) -> np.ndarray:
    """`count` numbers in [0, 1) per key, from sha256(seed, key): [N, count], the same on every machine."""
    out = np.empty((len(keys), count))
    for i, key in enumerate(keys):
        digest = hashlib.sha256(f"{seed}:{int(key)}".encode()).digest()
        out[i] = np.frombuffer(digest[:4 * count], dtype=">u4") / 2.0**32
    return out


@functools.lru_cache(maxsize=4)
def noise_bank(seed: int = SEED) -> np.ndarray:
    """NOISE_BANK fields of Gaussian noise [NOISE_BANK, 28, 28] drawn once from `seed`; each image takes one."""
    return np.random.default_rng(seed).normal(0.0, NOISE_STD, size=(NOISE_BANK, 28, 28)).astype(np.float32)


def _warp(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """x [N, H, W] sampled bilinearly at source coordinates rows, cols [N, H, W], zero outside the image.

    The same as scipy.ndimage.map_coordinates(order=1, mode="grid-constant") per image (the tests
    check it against scipy.ndimage.shift and rotate), vectorised over the batch with four gathers.
    """
    n, h, w = x.shape
    padded = np.zeros((n, h + 2, w + 2))
    padded[:, 1:-1, 1:-1] = x
    r = np.clip(rows + 1.0, 0.0, h + 1.0)
    c = np.clip(cols + 1.0, 0.0, w + 1.0)
    r0 = np.minimum(np.floor(r).astype(np.int64), h)
    c0 = np.minimum(np.floor(c).astype(np.int64), w)
    fr, fc = r - r0, c - c0
    flat = padded.reshape(-1)
    base = (np.arange(n) * (h + 2) * (w + 2))[:, None, None] + r0 * (w + 2) + c0
    return ((1 - fr) * ((1 - fc) * flat[base] + fc * flat[base + 1])
            + fr * ((1 - fc) * flat[base + w + 2] + fc * flat[base + w + 3]))


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return rows[None], cols[None]


def _shift(x: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    rows, cols = _grid(*x.shape[1:])
    direction = 2 * np.pi * u[:, 0, None, None]
    return _warp(x, rows - SHIFT_PIXELS * np.sin(direction), cols - SHIFT_PIXELS * np.cos(direction))


def _rotate(x: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    rows, cols = _grid(*x.shape[1:])
    low, high = ROTATE_DEGREES
    angle = np.deg2rad(low + (high - low) * u[:, 1]) * np.where(u[:, 2] < 0.5, -1.0, 1.0)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    cy, cx = (x.shape[1] - 1) / 2, (x.shape[2] - 1) / 2
    return _warp(x, cy + cos * (rows - cy) - sin * (cols - cx), cx + sin * (rows - cy) + cos * (cols - cx))


def _noise(x: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    return x + noise_bank(seed)[(u[:, 3] * NOISE_BANK).astype(int)]


def _blur(x: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma=(0, BLUR_SIGMA, BLUR_SIGMA), mode="constant")


def _contrast(x: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * CONTRAST + mean


def _occlusion(x: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    rows, cols = _grid(*x.shape[1:])
    places = x.shape[1] - 2 * OCCLUSION_MARGIN - OCCLUSION_SIZE + 1
    top = (OCCLUSION_MARGIN + (u[:, 4] * places).astype(int))[:, None, None]
    left = (OCCLUSION_MARGIN + (u[:, 5] * places).astype(int))[:, None, None]
    square = (rows >= top) & (rows < top + OCCLUSION_SIZE) & (cols >= left) & (cols < left + OCCLUSION_SIZE)
    return np.where(square, 0.0, x)


_APPLY = {"shift": _shift, "rotate": _rotate, "gaussian_noise": _noise, "blur": _blur, "contrast": _contrast,
          "occlusion": _occlusion}


def corrupt(images: np.ndarray, keys: np.ndarray, seed: int = SEED,
            assigned: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The corruptions of `images` (uint8 [N, 28, 28]): {name: uint8 images}, in NAMES order.

    Every image under every corruption ([N, 28, 28] each), or, given `assigned` (bool [C, N],
    assignment()), only the images assigned to each corruption ([assigned[c].sum(), 28, 28]).
    `keys` (one per image, record_keys) and `seed` give each image its parameters (uniforms), so
    an image's corrupted copies depend on nothing but its record and the seed. Vectorised over the
    batch: shift and rotation are one bilinear resampling each (_warp).
    """
    x = images.astype(np.float64)
    u = uniforms(keys, seed)
    out = {}
    for c, name in enumerate(NAMES):
        rows = slice(None) if assigned is None else assigned[c]
        out[name] = _to_uint8(_APPLY[name](x[rows], u[rows], seed))
    return out


def assignment(keys: np.ndarray, per_example: int = DEFAULT_PER_EXAMPLE, seed: int = SEED) -> np.ndarray:
    """Which corruptions each example gets: bool [C, N], `per_example` of the C per example.

    Each example starts at a corruption drawn from its key and the seed and takes the next
    `per_example` ones (cyclically), so every corruption gets about N * per_example / C examples;
    per_example = C is the full suite (every example under every corruption), 0 turns it off.
    """
    if not 0 <= per_example <= len(NAMES):
        raise ValueError(f"corruptions_per_example must be in 0..{len(NAMES)} (0: off), got {per_example}")
    start = (uniforms(keys, seed, count=7)[:, 6] * len(NAMES)).astype(int)
    return ((np.arange(len(NAMES))[:, None] - start[None, :]) % len(NAMES)) < per_example


def xor_digests(images: np.ndarray) -> int:
    """Order-independent digest of a set of images: the XOR of each image's sha256."""
    value = 0
    for image in images:
        value ^= int.from_bytes(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest(), "big")
    return value


def combined_sha256(per_corruption: dict[str, str]) -> str:
    """One checksum of the whole corrupted copy, from each corruption's (in NAMES order)."""
    return hashlib.sha256("".join(f"{n}:{per_corruption[n]};" for n in NAMES).encode()).hexdigest()
