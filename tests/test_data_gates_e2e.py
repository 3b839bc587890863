"""Subtly broken data as a user would bring it, through real LocalDagRunner runs (issue [gates]):
a test split copied into the training data, and digits moved off-centre, scaled or rotated. The
schema and DriftValidator's pixel summaries accept all of them; ImageValidator's checks stop the
run at DataGate, one line per problem naming the split, the check and the numbers, before any
trainer, with nothing in the registry. The same dataset clean runs to the end, and its rerun
against the registry's new champion passes the gate again.

Every run shares one output root and metadata store, as a user's reruns would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from components import image_checks
from components.image_validator.geometry_test import rotated, scaled, shifted
from components.mnist_example_gen.sources import MNIST_FILES
from components.registry import MlflowRegistry
from conftest import write_idx
from pipelines import local_runner, summary
from pipelines.config import PipelineConfig
from tests.test_data_bad_inputs import real_records
from tests.test_data_drift_e2e import N_TEST, N_TRAIN, _config, _executions, _run_expecting_the_gate


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gates-e2e")


def source(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """The user's four IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, (images, labels) in (("train", train), ("test", test)):
        write_idx(str(folder / (MNIST_FILES[f"{part}_images"].name + ".gz")), images)
        write_idx(str(folder / (MNIST_FILES[f"{part}_labels"].name + ".gz")), labels)
    return folder


def _image_results(cfg: PipelineConfig) -> dict:
    store = summary.open_store(cfg)
    [execution] = _executions(cfg, {"ImageValidator"})[-1:]
    [event] = [e for e in store.get_events_by_execution_ids([execution.id]) if e.type == e.OUTPUT
               and e.path.steps[0].key == "image_checks"]
    [artifact] = store.get_artifacts_by_id([event.artifact_id])
    return json.loads((Path(artifact.uri) / image_checks.CHECKS_FILE).read_text())


def test_a_test_split_copied_into_the_training_data_stops_the_run(shared_root, mnist_cache):
    train, test = real_records(mnist_cache, "train", N_TRAIN), real_records(mnist_cache, "t10k", N_TEST)
    leaked = (np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]]))
    cfg = _config(shared_root, source(shared_root / "leaked", leaked, test)).replace(train_limit=0)  # all 3,500
    message = _run_expecting_the_gate(cfg)
    assert (f"[contamination: test] {N_TEST} of {N_TEST} test images (100.00%) are copies of images in this run's "
            f"train and eval splits ({N_TEST} exact, 0 near duplicates), above the limit 0.50%") in message
    # The statistics saw nothing: the leak is invisible to the schema and to every TFDV comparator.
    assert "feature '" not in message and "[image drift" not in message
    against_champion = _image_results(cfg)["contamination"]["checks"][1]
    assert not against_champion["ran"] and against_champion["why_not"].startswith("no champion: ")


MOVES = {
    # change: (the change, [(the measure named, its comparator, at least this value)])
    "off-centre by 2 pixels": (lambda x: shifted(x, 2, 2), [("centre of mass x", "Jensen-Shannon divergence", 0.99),
                                                            ("centre of mass y", "Jensen-Shannon divergence", 0.99)]),
    "scaled to 80 %": (lambda x: scaled(x, 0.8), [("bounding box height", "L-infinity distance", 0.5)]),
    "rotated by 20 degrees": (lambda x: rotated(x, 20), [("bounding box height", "L-infinity distance", 0.4)]),
}


@pytest.mark.parametrize("change", list(MOVES))
def test_moved_scaled_or_rotated_digits_stop_the_run(shared_root, mnist_cache, change):
    move, named = MOVES[change]
    train, test = real_records(mnist_cache, "train", N_TRAIN), real_records(mnist_cache, "t10k", N_TEST)
    folder = source(shared_root / change.replace(" ", "-"), (move(train[0]), train[1]), (move(test[0]), test[1]))
    message = _run_expecting_the_gate(_config(shared_root, folder))
    for split in ("train", "test"):
        for measure, kind, at_least in named:
            found = re.search(rf"\[image drift: {split}\] {measure}: {kind} (\d\.\d+) above the threshold 0\.\d+, "
                              r"against the pinned image baseline \(no champion: ", message)
            assert found and float(found.group(1)) >= at_least, (split, measure, message)
    if change.startswith("off-centre"):  # what the pixel summaries alone would have let through
        assert "feature 'pixel_mean'" not in message and "feature 'ink_fraction'" not in message
    assert "[contamination" not in message


def test_the_clean_dataset_runs_to_the_end_and_its_rerun_passes_against_the_new_champion(shared_root, mnist_cache):
    train, test = real_records(mnist_cache, "train", N_TRAIN), real_records(mnist_cache, "t10k", N_TEST)
    cfg = _config(shared_root, source(shared_root / "clean", train, test)).replace(min_metric=0.5)
    registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
    local_runner.run_local(cfg)
    first = _image_results(cfg)
    assert first["problems"] == [] and first["drift"]["ran"]
    assert registry.champion() is not None, "the clean run is blessed and registered"
    local_runner.run_local(cfg)  # the champion moved: the image checks run again against it
    rerun = _image_results(cfg)
    assert rerun["problems"] == []
    within, against_champion = rerun["contamination"]["checks"]
    assert within["ran"] and within["contaminated"] == 0
    # The pusher registered the run's training images with the version; the rerun judges against them.
    assert against_champion["ran"] and against_champion["contaminated"] == 0
    assert against_champion["against"] == "the training images of champion version 1 of mnist-drift-e2e"
    assert rerun["drift"]["ran"] and rerun["drift"]["baseline_source"] == against_champion["against"]
