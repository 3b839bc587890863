"""The real ImageValidator executor (real Beam) on real MNIST records: a clean dataset passes and
leaves the artifact layout the registry keeps; a test split copied into the training data, or
taken from the champion's training images, is counted and named; an older champion without
fingerprints says why that check could not run; a missing image baseline fails closed; and the
data review shows it all, as Chromium renders it."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_artifacts

from components import champion, image_checks
from components import image_hashes as ih
from components.image_validator import executor
from components.image_validator.geometry_test import real_images
from components.mnist_example_gen.sources import MNIST_FILES
from conftest import DEFAULTS, TEST_BEAM_ARGS, run_example_gen, run_image_validator, seen_in_chromium, write_idx


def dataset(folder: Path, cache: Path, train_file: tuple[np.ndarray, np.ndarray],
            test_file: tuple[np.ndarray, np.ndarray], out: Path):
    """A user's dataset of the given (images, labels) as IDX files, ingested by the real MnistExampleGen."""
    folder.mkdir(parents=True)
    for part, (images, labels) in (("train", train_file), ("test", test_file)):
        write_idx(str(folder / (MNIST_FILES[f"{part}_images"].name + ".gz")), images)
        write_idx(str(folder / (MNIST_FILES[f"{part}_labels"].name + ".gz")), labels)
    return run_example_gen(out, folder.parent / "cache", source=str(folder), verify_checksums=0, train_limit=0,
                           test_limit=0)


def labels(cache: Path, part: str, start: int, stop: int) -> np.ndarray:
    from components.mnist_example_gen import idx

    return idx.read_records(idx.read_header(str(cache / f"{part}-labels-idx1-ubyte"), "labels"), start, stop)


def records(cache: Path, part: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    return real_images(cache, part, start, stop), labels(cache, part, start, stop)


def champion_statistics(out: Path, images_from: Path | None,
                        version: str = "3") -> standard_artifacts.ExampleStatistics:
    """ChampionResolver's statistics artifact for a champion whose baseline holds `images_from`'s
    train split as `images/Split-train/` (None: a version registered before the image checks)."""
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(out)
    out.mkdir(parents=True)
    artifact.split_names = artifact_utils.encode_split_names([])
    if images_from is not None:
        shutil.copytree(image_checks.split_folder(str(images_from), "train"),
                        image_checks.split_folder(image_checks.champion_images(str(out)), "train"))
    champion.set_properties(artifact, {champion.PRESENT: True, champion.VERSION: version,
                                       champion.REGISTERED_MODEL: "mnist-digits"})
    return artifact


@pytest.fixture(scope="module")
def clean_run(small_examples, tmp_path_factory):
    return run_image_validator(small_examples, tmp_path_factory.mktemp("clean"))


def test_clean_real_mnist_passes_and_leaves_the_baseline_layout(clean_run, small_examples):
    statistics, checks, results = clean_run
    assert results["problems"] == []
    within, against_champion = results["contamination"]["checks"]
    assert within["ran"] and within["test_images"] == 1000 and within["contaminated"] == 0
    assert not against_champion["ran"] and against_champion["why_not"] == "no champion given"
    assert results["drift"]["ran"] and "pinned image baseline" in results["drift"]["baseline_source"]
    measured = {(m["split"], m["feature"]) for m in results["drift"]["measures"]}
    assert measured == {(s, f) for s in ("train", "test")
                        for f in ("com_x", "com_y", "bbox_height", "bbox_width", "mean_image")}
    assert not any(m["over"] for m in results["drift"]["measures"])
    # What the registry keeps for the train split, and what the others hold too.
    counts = json.loads(small_examples.get_string_custom_property("split_counts"))
    assert artifact_utils.decode_split_names(statistics.split_names) == ["train", "eval", "test"]
    for split, count in counts.items():
        folder = Path(image_checks.split_folder(statistics.uri, split))
        assert {p.name for p in folder.iterdir()} == {image_checks.FEATURE_STATS_FILE, image_checks.MOMENTS_FILE,
                                                       image_checks.HASHES_FILE}
        found = ih.load(str(folder / image_checks.HASHES_FILE))
        assert len(found[ih.IDS]) == len(np.unique(found[ih.IDS])) == count == results["splits"][split]
        assert found[ih.THUMBNAILS].shape == (count, 196) and found[ih.THUMBNAILS].dtype == np.uint8
    assert set(image_checks.read_pictures(checks)) == {"mean.train", "mean.test", "mean.baseline"}
    assert not (Path(checks.uri) / executor.WORK_DIR).exists()


def test_the_fingerprints_are_the_images(clean_run, small_examples):
    from components import examples

    statistics, _, _ = clean_run
    images, _ = examples.load_split(small_examples, "test")
    found = ih.load(os.path.join(image_checks.split_folder(statistics.uri, "test"), image_checks.HASHES_FILE))
    assert (found[ih.EXACT] == ih.exact_hashes(images)).all()  # ids in file order: the records' order
    assert (found[ih.THUMBNAILS] == ih.thumbnails(images)).all()


@pytest.fixture(scope="module")
def leaked(mnist_cache, tmp_path_factory):
    """The test split copied into the training data: the first 600 training records and the 200 test records."""
    root = tmp_path_factory.mktemp("leaked")
    train, test = records(mnist_cache, "train", 0, 600), records(mnist_cache, "t10k", 0, 200)
    examples = dataset(root / "source", mnist_cache, (np.concatenate([train[0], test[0]]),
                                                      np.concatenate([train[1], test[1]])), test, root / "examples")
    return examples, run_image_validator(examples, root / "checks")


def test_a_test_split_copied_into_the_training_data_is_found(leaked):
    _, (_, checks, results) = leaked
    within = results["contamination"]["checks"][0]
    assert (within["contaminated"], within["exact"], within["near"]) == (200, 200, 0)
    [line] = results["problems"]
    assert line == ("[contamination: test] 200 of 200 test images (100.00%) are copies of images in this run's train "
                    "and eval splits (200 exact, 0 near duplicates), above the limit 0.50%")
    pictures = image_checks.read_pictures(checks)
    assert pictures["this_run.test"].shape == (4, 28, 28)  # four exact pairs shown, no near one exists
    # each test image above the thumbnail of its copy, enlarged: for an exact copy, its own thumbnail
    thumbnails = ih.thumbnails(pictures["this_run.test"]).reshape(-1, 14, 14)
    assert (np.kron(thumbnails, np.ones((1, 2, 2), np.uint8)) == pictures["this_run.reference"]).all()


def test_a_test_split_from_the_champions_training_images_is_found(clean_run, mnist_cache, tmp_path):
    statistics, _, _ = clean_run  # the champion trained on small_examples' train split: train records 0-2999
    resolved = champion_statistics(tmp_path / "champion", Path(statistics.uri))
    new = dataset(tmp_path / "source", mnist_cache, records(mnist_cache, "train", 3000, 3600),
                  records(mnist_cache, "train", 0, 200), tmp_path / "examples")
    _, _, results = run_image_validator(new, tmp_path / "checks", champion_statistics=resolved)
    within, against_champion = results["contamination"]["checks"]
    assert within["contaminated"] == 0
    # Of the 200, the ones the ingest had held out as eval were never the champion's training images.
    assert against_champion["ran"] and 170 <= against_champion["contaminated"] == against_champion["exact"] < 200
    assert against_champion["against"] == "the training images of champion version 3 of mnist-digits"
    assert len(results["problems"]) == 1 and results["problems"][0].startswith(
        f"[contamination: test] {against_champion['contaminated']} of 200 test images")
    assert results["drift"]["baseline_source"] == "the training images of champion version 3 of mnist-digits"


def test_an_older_champion_without_fingerprints_says_why_its_check_did_not_run(small_examples, tmp_path):
    resolved = champion_statistics(tmp_path / "champion", None, version="2")
    _, _, results = run_image_validator(small_examples, tmp_path / "checks", champion_statistics=resolved)
    against_champion = results["contamination"]["checks"][1]
    assert not against_champion["ran"]
    assert re.fullmatch(r"champion version 2 of mnist-digits was registered without the fingerprints of its "
                        r"training images \(no images/Split-train/image_hashes.npz: .*\)", against_champion["why_not"])
    assert results["drift"]["baseline_source"] == ("the pinned image baseline (champion version 2 of mnist-digits was "
                                                   "registered without image statistics)")
    assert results["problems"] == []


def test_a_missing_image_baseline_fails_closed_and_none_turns_the_check_off(small_examples, tmp_path):
    _, _, missing = run_image_validator(small_examples, tmp_path / "missing",
                                        **{executor.BASELINE: str(tmp_path / "nowhere")})
    [line] = missing["problems"]
    assert line.startswith("[image drift] could not run against the pinned image baseline (no champion given): "
                           f"no image baseline at {tmp_path / 'nowhere'}")
    _, _, off = run_image_validator(small_examples, tmp_path / "off", **{executor.BASELINE: ""})
    assert off["problems"] == [] and not off["drift"]["ran"]
    assert off["drift"]["why_not"] == "none: image drift check off (image_baseline none)"


def test_the_data_review_shows_the_pairs_and_the_mean_images(leaked, tmp_path):
    examples, (_, checks, _) = leaked
    page = render_review(examples, checks, tmp_path)
    seen = seen_in_chromium(page, tmp_path / "seen")
    assert seen["images"]["duplicate-pairs-this_run"] and seen["images"]["mean-images"]
    text = seen["text"]
    assert "the data gate stops the run" in text and "200 of 200 test images (100.00%)" in text
    assert "200 (200 + 0)" in text and "above the limit 0.50%" in text
    assert "could not run: no champion given" in text
    assert "Sample pairs: test images and their copies in this run's train and eval splits" in text
    assert "centre of mass x" in text and "bounding box height" in text


def render_review(examples, checks, tmp_path: Path) -> Path:
    """The real StatisticsGen, ExampleValidator and DriftValidator on `examples`, with the image checks."""
    from tfx.components.example_validator import executor as validator_executor
    from tfx.components.statistics_gen import executor as stats_executor
    from tfx.types import standard_component_specs as keys

    from components.drift_validator import executor as drift_executor
    from components.drift_validator.executor_test import _artifact

    schema = _artifact(standard_artifacts.Schema, tmp_path / "schema")
    (tmp_path / "schema" / "schema.pbtxt").write_text(Path(DEFAULTS.schema_path).read_text())
    stats = _artifact(standard_artifacts.ExampleStatistics, tmp_path / "statistics")
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=TEST_BEAM_ARGS)
    stats_executor.Executor(context).Do({keys.EXAMPLES_KEY: [examples], keys.SCHEMA_KEY: [schema]},
                                        {keys.STATISTICS_KEY: [stats]}, {"exclude_splits": "[]"})
    anomalies = _artifact(standard_artifacts.ExampleAnomalies, tmp_path / "anomalies")
    validator_executor.Executor().Do({keys.STATISTICS_KEY: [stats], keys.SCHEMA_KEY: [schema]},
                                     {keys.ANOMALIES_KEY: [anomalies]}, {"exclude_splits": "[]"})
    drift = _artifact(standard_artifacts.ExampleAnomalies, tmp_path / "drift")
    drift_executor.Executor().Do(
        {drift_executor.STATISTICS: [stats], drift_executor.SCHEMA: [schema], drift_executor.ANOMALIES: [anomalies],
         drift_executor.IMAGE_CHECKS: [checks]},
        {drift_executor.DRIFT_ANOMALIES: [drift]},
        {drift_executor.BASELINE: DEFAULTS.resolved_baseline_statistics(),
         drift_executor.LABEL_LINF: DEFAULTS.drift_label_linf, drift_executor.PIXEL_JS: DEFAULTS.drift_pixel_js})
    return Path(drift.get_string_custom_property("review_html"))


def test_the_data_gate_stops_on_the_image_problems_and_passes_without(leaked, clean_run, small_examples, tmp_path):
    from components.data_gate import executor as gate
    from components.drift_validator.executor_test import _artifact

    clean_anomalies = _artifact(standard_artifacts.ExampleAnomalies, tmp_path / "no-schema-anomalies")
    clean_anomalies.split_names = artifact_utils.encode_split_names([])
    _, (_, checks, results) = leaked
    with pytest.raises(gate.DataAnomaliesError) as err:
        gate.Executor().Do({gate.ANOMALIES: [clean_anomalies], gate.IMAGE_CHECKS: [checks]}, {}, {})
    assert str(err.value).startswith("data validation found 1 anomalies")
    assert str(err.value).splitlines()[-1].strip() == results["problems"][0]
    _, clean_checks, _ = clean_run
    gate.Executor().Do({gate.ANOMALIES: [clean_anomalies], gate.IMAGE_CHECKS: [clean_checks]}, {}, {})
