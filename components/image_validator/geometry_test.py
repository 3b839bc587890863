"""Centre of mass, bounding box and mean image of real MNIST digits, and their TFDV statistics as
TFX's DistributionValidator compares them: real digits against real digits pass, the same digits
shifted, scaled or rotated do not."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from tfx.types import standard_artifacts

from components import image_checks, image_hashes
from components.image_validator import drift, geometry
from components.mnist_example_gen import idx
from conftest import DEFAULTS

THRESHOLDS = drift.Thresholds(DEFAULTS.image_centre_js, DEFAULTS.image_box_linf, DEFAULTS.image_mean_excess)


def real_images(cache: Path, part: str, start: int, stop: int) -> np.ndarray:
    return idx.read_records(idx.read_header(str(cache / f"{part}-images-idx3-ubyte"), "images"), start, stop)


def rotated(images: np.ndarray, degrees: float) -> np.ndarray:
    return np.stack([ndimage.rotate(i, degrees, reshape=False, order=1) for i in images]).astype(np.uint8)


def scaled(images: np.ndarray, factor: float) -> np.ndarray:
    centre = (geometry.SIDE - 1) / 2
    return np.stack([np.clip(ndimage.affine_transform(i.astype(float), np.eye(2) / factor,
                                                      offset=centre - centre / factor, order=1), 0, 255)
                     for i in images]).astype(np.uint8)


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.stack([ndimage.shift(i, (dy, dx), order=0) for i in images])


def test_centre_of_mass_and_bounding_box_of_real_digits(mnist_cache):
    images = real_images(mnist_cache, "t10k", 0, 500)
    found = geometry.geometry(images)
    # MNIST puts each digit's centre of mass at pixel (14, 14) (whose centre is 14.5 pixels from the
    # corner); a digit is at most 20 pixels tall.
    for name in geometry.CENTRE_FEATURES:
        assert abs(np.median(found[name]) - 14.5) < 0.25
    assert found[geometry.BBOX_HEIGHT].max() <= 20 and np.median(found[geometry.BBOX_HEIGHT]) >= 17
    moving = shifted(images, 2, -3)
    moved = geometry.geometry(moving)
    kept = moving.sum(axis=(1, 2)) == images.sum(axis=(1, 2))  # moved whole, none of the ink cut off
    assert kept.mean() > 0.9
    np.testing.assert_allclose(moved[geometry.COM_Y][kept] - found[geometry.COM_Y][kept], 2, atol=1e-6)
    np.testing.assert_allclose(moved[geometry.COM_X][kept] - found[geometry.COM_X][kept], -3, atol=1e-6)
    blank = geometry.geometry(np.zeros((1, 28, 28), np.uint8))
    assert np.isnan(blank[geometry.COM_X][0]) and blank[geometry.BBOX_WIDTH][0] == 0


def test_summaries_add_up_batch_by_batch(mnist_cache):
    images = real_images(mnist_cache, "t10k", 0, 900)
    whole = geometry.summarize(images)
    parts = geometry.summarize(images[:300]) + geometry.summarize(images[300:])
    assert whole.count == parts.count == 900
    np.testing.assert_allclose(whole.mean_image, parts.mean_image)
    np.testing.assert_allclose(whole.variance_image, parts.variance_image, rtol=1e-4)  # float32 squares
    for name in geometry.CENTRE_FEATURES:
        assert (whole.com[name] == parts.com[name]).all()
        np.testing.assert_allclose(whole.com_moments[name], parts.com_moments[name])
    for name in geometry.BOX_FEATURES:
        assert (whole.box[name] == parts.box[name]).all()
    np.testing.assert_allclose(whole.mean_image, images.mean(axis=0))


def _statistics_folder(root: Path, name: str, splits: dict[str, np.ndarray]) -> standard_artifacts.ExampleStatistics:
    folder = root / name
    for split, images in splits.items():
        summary = geometry.summarize(images)
        target = Path(image_checks.split_folder(str(folder), split))
        target.mkdir(parents=True)
        (target / image_checks.FEATURE_STATS_FILE).write_bytes(
            geometry.to_statistics(split, summary).SerializeToString())
        image_hashes.save_arrays(str(target / image_checks.MOMENTS_FILE), geometry.moments(summary))
    return drift._statistics_artifact(str(folder), list(splits))


def _measures(root: Path, baseline: standard_artifacts.ExampleStatistics, name: str,
              images: np.ndarray) -> dict[str, float]:
    current = _statistics_folder(root, name, {"test": images})
    output = standard_artifacts.ExampleAnomalies()
    output.uri = str(root / f"{name}-anomalies")
    found = drift.run_distribution_validator(current, baseline, output, ["test"], THRESHOLDS)
    measured = {m["feature"]: m["value"] for m in drift.measures_of("test", found["test"])}
    measured["mean_image"] = drift.mean_image_measure("test", drift.load_moments(current.uri, "test"),
                                                      drift.load_moments(baseline.uri, "train"),
                                                      THRESHOLDS.mean_image)["value"]
    return measured


@pytest.fixture(scope="module")
def baseline_of_real_digits(mnist_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    return root, _statistics_folder(root, "baseline", {"train": real_images(mnist_cache, "train", 0, 20_000)})


CHANGES = {"none": lambda x: x, "shift right 2": lambda x: shifted(x, 0, 2), "shift down 1": lambda x: shifted(x, 1, 0),
           "scale 0.85": lambda x: scaled(x, 0.85), "scale 1.2": lambda x: scaled(x, 1.2),
           "rotate 15": lambda x: rotated(x, 15), "rotate -20": lambda x: rotated(x, -20)}


@pytest.mark.parametrize("change, over", [
    ("none", ()),
    ("shift right 2", ("com_x", "mean_image")),
    ("shift down 1", ("com_y",)),
    ("scale 0.85", ("bbox_height", "mean_image")),
    ("scale 1.2", ("bbox_height", "mean_image")),
    ("rotate 15", ("bbox_height",)),
    ("rotate -20", ("bbox_height",)),
])
def test_distribution_validator_tells_moved_digits_from_real_ones(baseline_of_real_digits, mnist_cache, change, over):
    root, baseline = baseline_of_real_digits
    test = real_images(mnist_cache, "t10k", 0, 1000)
    changed = CHANGES[change](test)
    measured = _measures(root, baseline, change.replace(" ", "-"), changed)
    limits = {"com_x": THRESHOLDS.centre_js, "com_y": THRESHOLDS.centre_js, "bbox_height": THRESHOLDS.box_linf,
              "bbox_width": THRESHOLDS.box_linf, "mean_image": THRESHOLDS.mean_image}
    above = {name for name, value in measured.items() if value > limits[name]}
    assert set(over) <= above, measured
    if change == "none":  # the first 1,000 test digits, a different set of writers from the baseline's
        assert above == set(), measured


def test_a_baseline_without_statistics_fails_closed(tmp_path):
    with pytest.raises(drift.BaselineMissing, match="no image baseline at"):
        drift.baseline_artifact(str(tmp_path / "nowhere"))
    current = _statistics_folder(tmp_path, "current", {"test": np.zeros((3, 28, 28), np.uint8)})
    output = standard_artifacts.ExampleAnomalies()
    output.uri = str(tmp_path / "out")
    # DistributionValidator alone passes everything without a baseline ("rubber stamping"); wrapped, it fails.
    with pytest.raises(drift.BaselineMissing):
        drift.run_distribution_validator(current, None, output, ["test"], THRESHOLDS)


def test_a_baseline_missing_a_compared_feature_is_a_problem(tmp_path, mnist_cache):
    images = real_images(mnist_cache, "t10k", 0, 200)
    baseline = _statistics_folder(tmp_path, "baseline", {"train": images})
    stats_file = Path(image_checks.split_folder(baseline.uri, "train")) / image_checks.FEATURE_STATS_FILE
    stats = geometry.to_statistics("train", geometry.summarize(images))
    del stats.datasets[0].features[0]  # an older baseline without com_x
    stats_file.write_bytes(stats.SerializeToString())
    current = _statistics_folder(tmp_path, "current", {"test": images})
    output = standard_artifacts.ExampleAnomalies()
    output.uri = str(tmp_path / "out")
    found = drift.run_distribution_validator(current, baseline, output, ["test"], THRESHOLDS)
    measures = drift.measures_of("test", found["test"])
    [line] = drift.problem_lines(measures, "the pinned image baseline")
    assert line.startswith("[image drift: test] centre of mass x: could not be compared with the pinned image baseline")


def test_the_pinned_text_baseline_becomes_the_files_a_run_compares_with(tmp_path):
    """schema/image_baseline/ is text; materialised, it is what write_pinned_baseline was given."""
    pinned = DEFAULTS.resolved_image_baseline()
    assert not list(Path(pinned).rglob("*.pb")) and not list(Path(pinned).rglob("*.npz"))
    binary = drift.materialise(pinned, str(tmp_path / "binary"))
    moments = drift.load_moments(binary, "train")
    assert moments["count"] > 50_000 and moments["mean"].shape == moments["variance"].shape == (28, 28)
    again = drift.write_pinned_baseline(binary, str(tmp_path / "text"))
    for name in (image_checks.FEATURE_STATS_TEXT_FILE, image_checks.MOMENTS_TEXT_FILE):
        assert (Path(again) / "Split-train" / name).read_text() == (Path(pinned) / "Split-train" / name).read_text()
    assert drift.materialise(binary, str(tmp_path / "unused")) == binary  # a champion's binary folder as it is
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "FeatureStats.pbtxt").write_text("datasets { nonsense: 1 }"),
     "FeatureStats.pbtxt: not a statistics"),
    (lambda d: (d / "image_moments.json").write_text('{"count": {"dtype": "int64", "shape": [], "values": 1}}'),
     "image_moments.json: not the image moments (ValueError: no mean, variance)"),
    (lambda d: (d / "image_moments.json").write_text('{"mean": {"dtype": "float64", "shape": [28, 28], '
                                                     '"values": [0.5]}}'), "image_moments.json: not the image moments"),
    (lambda d: (d / "image_moments.json").unlink(), "no image baseline at"),
])
def test_a_damaged_pinned_baseline_is_refused_naming_its_file(tmp_path, damage, expected):
    import shutil

    copy = tmp_path / "pinned"
    shutil.copytree(DEFAULTS.resolved_image_baseline(), copy)
    damage(copy / "Split-train")
    with pytest.raises(drift.BaselineMissing, match=re.escape(expected)):
        drift.materialise(str(copy), str(tmp_path / "binary"))
    assert not (tmp_path / "binary").exists()
