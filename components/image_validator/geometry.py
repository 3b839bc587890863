"""Where the ink is: each digit's centre of mass and bounding box, and a split's per-pixel mean
image, as mergeable summaries (a Beam combine adds them up) that become TFDV statistics for
DistributionValidator's comparators.

Why these: pixel_mean and ink_fraction (DriftValidator's) do not move when every digit is shifted,
scaled or rotated; MNIST's digits are centred by their centre of mass in a 20x20 box, so a
one-pixel shift moves the centre-of-mass distribution off the baseline's (Jensen-Shannon
divergence 1.0 on real MNIST), and a 10 % scaling or a 10-degree rotation changes the bounding
boxes of most digits (L-infinity 0.88-0.92 and 0.46-0.60), where re-splits and subsets of real
MNIST stay under 0.004 and 0.083 (bench/README.md, "Gates").

The statistics are built here from exact fixed-bin histograms instead of TFDV's
GenerateStatistics: the same proto and comparators, at a fraction of the cost (GenerateStatistics
took 5-6 s for the three splits' four features on this machine, the whole image check about 6 s
of CPU), and with the same bucket edges for every dataset, so the comparator needs no
re-bucketing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tensorflow_metadata.proto.v0 import statistics_pb2

SIDE = 28
INK_LEVEL = 64  # a pixel of the bounding box: at least a quarter of full ink (JPEG ringing and noise stay out)
COM_EDGES = np.linspace(0.0, SIDE, 4 * SIDE + 1)  # quarter-pixel buckets
COM_X, COM_Y, BBOX_HEIGHT, BBOX_WIDTH = "com_x", "com_y", "bbox_height", "bbox_width"
FEATURES = {COM_X: "centre of mass x", COM_Y: "centre of mass y",
            BBOX_HEIGHT: "bounding box height", BBOX_WIDTH: "bounding box width"}
CENTRE_FEATURES = (COM_X, COM_Y)
BOX_FEATURES = (BBOX_HEIGHT, BBOX_WIDTH)


@dataclasses.dataclass
class ImageSummary:
    """A split's images, summed: adding two summaries gives the summary of both."""
    count: int = 0
    blank: int = 0  # no ink at all: no centre of mass, no bounding box
    pixel_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(SIDE * SIDE))
    pixel_squares: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(SIDE * SIDE))
    # centre of mass: counts per COM_EDGES bucket, and sum, sum of squares, min, max
    com: dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: {
        name: np.zeros(len(COM_EDGES) - 1, dtype=np.int64) for name in CENTRE_FEATURES})
    com_moments: dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: {
        name: np.array([0.0, 0.0, np.inf, -np.inf]) for name in CENTRE_FEATURES})
    # bounding box: counts per size 0..28 pixels
    box: dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: {
        name: np.zeros(SIDE + 1, dtype=np.int64) for name in BOX_FEATURES})

    def __add__(self, other: ImageSummary) -> ImageSummary:
        moments = {}
        for name in CENTRE_FEATURES:
            a, b = self.com_moments[name], other.com_moments[name]
            moments[name] = np.array([a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])])
        return ImageSummary(
            count=self.count + other.count, blank=self.blank + other.blank,
            pixel_sum=self.pixel_sum + other.pixel_sum, pixel_squares=self.pixel_squares + other.pixel_squares,
            com={name: self.com[name] + other.com[name] for name in CENTRE_FEATURES}, com_moments=moments,
            box={name: self.box[name] + other.box[name] for name in BOX_FEATURES})

    @property
    def mean_image(self) -> np.ndarray:
        return (self.pixel_sum / max(self.count, 1)).reshape(SIDE, SIDE)

    @property
    def variance_image(self) -> np.ndarray:
        mean = self.pixel_sum / max(self.count, 1)
        return np.maximum(self.pixel_squares / max(self.count, 1) - mean ** 2, 0.0).reshape(SIDE, SIDE)


def _extent(mask: np.ndarray) -> np.ndarray:
    """Pixels from the first to the last True along axis 1 (0 where there is none)."""
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    return np.where(mask.any(axis=1), last - first + 1, 0)


_POSITION = np.arange(SIDE) + 0.5  # a pixel's centre


def geometry(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: the centre of mass (ink-weighted, in pixels from the top-left corner, NaN for a
    blank image) and the bounding box of its pixels of at least INK_LEVEL (0 when there is none)."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), SIDE, SIDE)
    rows, cols = images.sum(axis=2, dtype=np.int32), images.sum(axis=1, dtype=np.int32)
    mass = rows.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        com_y, com_x = rows @ _POSITION / mass, cols @ _POSITION / mass
    return {COM_X: com_x, COM_Y: com_y, BBOX_HEIGHT: _extent(images.max(axis=2) >= INK_LEVEL),
            BBOX_WIDTH: _extent(images.max(axis=1) >= INK_LEVEL)}


def summarize(images: np.ndarray) -> ImageSummary:
    """The summary of one batch of images."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), SIDE * SIDE)
    shapes = geometry(images)
    inked = np.isfinite(shapes[COM_X])
    pixels = images.astype(np.float32)
    summary = ImageSummary(count=len(images), blank=int((~inked).sum()),
                           pixel_sum=images.sum(axis=0, dtype=np.int64).astype(np.float64),
                           pixel_squares=np.einsum("ij,ij->j", pixels, pixels).astype(np.float64))
    for name in CENTRE_FEATURES:
        values = shapes[name][inked]
        summary.com[name] = np.histogram(np.clip(values, 0.0, SIDE), COM_EDGES)[0]
        if len(values):
            summary.com_moments[name] = np.array([values.sum(), (values ** 2).sum(), values.min(), values.max()])
    for name in BOX_FEATURES:
        summary.box[name] = np.bincount(shapes[name][inked], minlength=SIDE + 1)[:SIDE + 1]
    return summary


def _common(stats: statistics_pb2.CommonStatistics, present: int, missing: int) -> None:
    stats.num_non_missing, stats.num_missing = present, missing
    stats.min_num_values = stats.max_num_values = 1
    stats.avg_num_values, stats.tot_num_values = 1.0, present


def to_statistics(split: str, summary: ImageSummary) -> statistics_pb2.DatasetFeatureStatisticsList:
    """The summary as TFDV statistics: the centre of mass numeric (a standard histogram on fixed
    quarter-pixel buckets), the bounding box categorical (its sizes' counts), blank images missing."""
    result = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = result.datasets.add(name=split, num_examples=summary.count)
    present = summary.count - summary.blank
    for name in CENTRE_FEATURES:
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
        feature.path.step.append(name)
        total, squares, low, high = summary.com_moments[name]
        numeric = feature.num_stats
        _common(numeric.common_stats, present, summary.blank)
        if present:
            numeric.mean = total / present
            numeric.std_dev = float(np.sqrt(max(squares / present - numeric.mean ** 2, 0.0)))
            numeric.min, numeric.max = low, high
        histogram = numeric.histograms.add(type=statistics_pb2.Histogram.STANDARD)
        for lo, hi, count in zip(COM_EDGES[:-1], COM_EDGES[1:], summary.com[name], strict=True):
            histogram.buckets.add(low_value=lo, high_value=hi, sample_count=float(count))
    for name in BOX_FEATURES:
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.INT)
        feature.path.step.append(name)
        categorical = feature.string_stats
        _common(categorical.common_stats, present, summary.blank)
        sizes = [(int(size), int(count)) for size, count in enumerate(summary.box[name]) if count]
        categorical.unique = len(sizes)
        for rank, (size, count) in enumerate(sorted(sizes, key=lambda s: (-s[1], s[0]))):
            categorical.top_values.add(value=str(size), frequency=count)
            categorical.rank_histogram.buckets.add(low_rank=rank, high_rank=rank, label=str(size), sample_count=count)
    return result


@dataclasses.dataclass(frozen=True)
class MeanImageDifference:
    """How far a split's mean image is from the baseline's, as a share of the baseline's ink:
    `raw` = sum |mean - baseline mean| / sum baseline mean; `noise` = what sampling alone gives
    in expectation (sum of sqrt(2/pi) * sqrt(var/n + var0/n0)); `excess` = raw - noise, the part
    sampling does not explain (what the threshold applies to, so small splits are not penalised)."""
    raw: float
    noise: float

    @property
    def excess(self) -> float:
        return self.raw - self.noise


def mean_image_difference(current: ImageSummary | dict, baseline: ImageSummary | dict) -> MeanImageDifference:
    current, baseline = _moments(current), _moments(baseline)
    ink = max(float(baseline["mean"].sum()), 1e-9)
    raw = float(np.abs(current["mean"] - baseline["mean"]).sum()) / ink
    spread = np.sqrt(current["variance"] / max(current["count"], 1) + baseline["variance"] / max(baseline["count"], 1))
    return MeanImageDifference(raw=raw, noise=float(np.sqrt(2 / np.pi) * spread.sum()) / ink)


MOMENT_KEYS = ("count", "mean", "variance")


def moments(summary: ImageSummary) -> dict[str, np.ndarray]:
    """What the moments file holds: the image count, the per-pixel mean and variance (28x28)."""
    return {"count": np.array(summary.count), "mean": summary.mean_image, "variance": summary.variance_image}


def _moments(value: ImageSummary | dict) -> dict[str, np.ndarray]:
    found = moments(value) if isinstance(value, ImageSummary) else value
    return {"count": int(found["count"]), "mean": np.asarray(found["mean"], dtype=np.float64).reshape(SIDE, SIDE),
            "variance": np.asarray(found["variance"], dtype=np.float64).reshape(SIDE, SIDE)}
