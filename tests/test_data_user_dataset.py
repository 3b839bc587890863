"""A user's own IDX dataset: accepted with checksums from a SHA256SUMS manifest next to it, or with
an explicit, logged opt-out; class names from config; it never replaces the cached MNIST."""

from __future__ import annotations

import json
import logging

import pytest

from components.mnist_example_gen import sources
from conftest import run_example_gen
from pipelines.config import PipelineConfig, load_config
from tests.test_data_bad_inputs import TRAIN_LABELS, idx_folder

FIVE_CLASSES = ["zero-five", "one-six", "two-seven", "three-eight", "four-nine"]


def _five_class_folder(folder, cache):
    """Real MNIST records relabelled to 5 classes: a dataset that is not MNIST."""
    return idx_folder(folder, cache, transform=lambda images, labels: (images, labels % 5))


def _write_manifest(folder) -> None:
    lines = [f"{sources.file_digest(str(p), 'sha256')}  {p.name}" for p in sorted(folder.glob("*.gz"))]
    (folder / sources.MANIFEST_NAME).write_text("\n".join(lines) + "\n")


def test_user_dataset_with_manifest_and_class_names(mnist_cache, tmp_path):
    folder = _five_class_folder(tmp_path / "mine", mnist_cache)
    _write_manifest(folder)
    cache = tmp_path / "cache"
    examples = run_example_gen(tmp_path / "examples", cache, source=str(folder),
                               class_names=json.dumps(FIVE_CLASSES))
    assert json.loads(examples.get_string_custom_property("class_names")) == FIVE_CLASSES
    assert examples.get_int_custom_property("checksums_verified") == 1
    counts = json.loads(examples.get_string_custom_property("split_counts"))
    assert counts["train"] + counts["eval"] == 600 and counts["test"] == 200
    # Cached apart from MNIST: a later run without a source must not mistake it for MNIST.
    assert sources.cached_files(str(cache)) is None
    assert not (cache / TRAIN_LABELS).exists()


def test_manifest_mismatch_names_the_file_and_the_manifest(mnist_cache, tmp_path):
    folder = _five_class_folder(tmp_path / "mine", mnist_cache)
    _write_manifest(folder)
    idx_folder(folder, mnist_cache, n_train=599)  # the files change after the manifest was written
    expected = rf"train-images-idx3-ubyte\.gz: sha256 \(manifest .*{sources.MANIFEST_NAME}\) checksum mismatch"
    with pytest.raises(sources.ChecksumError, match=expected):
        run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder))


def test_file_missing_from_the_manifest(mnist_cache, tmp_path):
    folder = _five_class_folder(tmp_path / "mine", mnist_cache)
    _write_manifest(folder)
    manifest = folder / sources.MANIFEST_NAME
    manifest.write_text("".join(line + "\n" for line in manifest.read_text().splitlines()
                                if TRAIN_LABELS not in line))
    with pytest.raises(sources.SourceError, match=rf"{TRAIN_LABELS}\.gz: not listed in the checksum manifest"):
        run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder))


def test_malformed_manifest_names_the_line(mnist_cache, tmp_path):
    folder = _five_class_folder(tmp_path / "mine", mnist_cache)
    (folder / sources.MANIFEST_NAME).write_text("abc train-images-idx3-ubyte.gz\n")
    with pytest.raises(sources.SourceError, match=r"SHA256SUMS: line 1 is not 'SHA256  FILENAME'"):
        run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder))


def test_explicit_opt_out_is_logged_and_recorded(mnist_cache, tmp_path, caplog):
    folder = _five_class_folder(tmp_path / "mine", mnist_cache)
    with caplog.at_level(logging.WARNING):
        examples = run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder),
                                   verify_checksums=0, class_names=json.dumps(FIVE_CLASSES))
    assert "checksum verification is OFF" in caplog.text
    assert examples.get_int_custom_property("checksums_verified") == 0


def test_labels_outside_the_configured_classes(mnist_cache, tmp_path):
    folder = idx_folder(tmp_path / "mine", mnist_cache)  # labels 0-9
    with pytest.raises(Exception, match=rf"{folder}/train-labels-idx1-ubyte.gz \(.*\): label [5-9] at record \d+ "
                                        r"is outside 0-4"):
        run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder),
                        verify_checksums=0, class_names=json.dumps(FIVE_CLASSES))


def test_config_class_names():
    assert PipelineConfig().class_names == tuple("0123456789")
    assert load_config(class_names=["cat", "dog"]).class_names == ("cat", "dog")
    with pytest.raises(ValueError, match="class_names needs 2 to 10 names"):
        load_config(class_names=[str(i) for i in range(11)])


def test_a_five_class_dataset_is_learnt_judged_and_reported_by_its_class_names(mnist_cache, tmp_path):
    """`class_names` all the way: both trainers build 5-way heads, the evaluation scores 5 classes
    (a macro-F1 not capped by 5 empty digit classes), the report and the KFP confusion matrix name
    the classes."""
    from components.bakeoff_evaluator import kfp_artifacts
    from conftest import run_evaluator, seen_in_chromium, train
    from trainers import keras_trainer, loader, torch_trainer

    folder = _five_class_folder(tmp_path / "mine", mnist_cache)
    _write_manifest(folder)
    examples = run_example_gen(tmp_path / "examples", tmp_path / "cache", source=str(folder),
                               class_names=json.dumps(FIVE_CLASSES))
    models = {name: train(run_fn, examples, tmp_path / name, epochs=2, class_names=FIVE_CLASSES)
              for name, run_fn in (("keras_model", keras_trainer.run_fn), ("pytorch_model", torch_trainer.run_fn))}
    for model in models.values():
        _, meta = loader.load_predictor(str(model / "Format-Serving"))
        assert meta["class_names"] == FIVE_CLASSES and meta["num_classes"] == 5
    evaluation, _ = run_evaluator(examples, models, tmp_path, min_accuracy=0.0)
    assert evaluation["class_names"] == FIVE_CLASSES
    for c in evaluation["candidates"].values():
        assert len(c["metrics"]["confusion_matrix"]) == 5 and set(c["metrics"]["per_class"]) == set("01234")
        assert c["metrics"]["macro_f1"] > 0.5  # ten classes, five never seen, would cap it at 0.5
    seen = seen_in_chromium(tmp_path / "evaluation" / "report.html", tmp_path / "seen")
    assert all(name in seen["text"] for name in FIVE_CLASSES) and seen["images"]["confusion-matrices"]
    confusion = kfp_artifacts.ClassificationMetrics()
    kfp_artifacts.write_ui_outputs({kfp_artifacts.CLASSIFICATION_METRICS: [confusion]}, evaluation, {})
    matrix = confusion.get_json_value_custom_property("confusionMatrix")
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == FIVE_CLASSES
    assert len(matrix["rows"]) == 5
