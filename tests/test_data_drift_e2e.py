"""Data that is well-formed but not like the baseline, through a real LocalDagRunner run: a label
distribution with one digit missing, and inverted images (255 - x). The schema accepts both; the
drift check against the pinned full-MNIST baseline stops the run at DataGate, in plain words,
before any trainer, and nothing reaches the registry. The review HTML stays.

Both runs share one output root and metadata store, as a user's reruns would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.data_gate.executor import DataAnomaliesError
from components.registry import MlflowRegistry
from conftest import FAST_TRAINING
from pipelines import local_runner
from pipelines.config import PipelineConfig, load_config
from pipelines.pipeline import TRAINER_IDS
from pipelines.summary import open_store
from tests.test_data_bad_inputs import idx_folder

N_TRAIN, N_TEST = 2500, 1000


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("drift-e2e")


def _config(root: Path, source: Path) -> PipelineConfig:
    return load_config(output_root=str(root / "out"), source=str(source), cache_dir=str(root / "cache"),
                          verify_checksums=False, registered_model_name="mnist-drift-e2e",
                          beam_direct_running_mode="in_memory", train_limit=N_TRAIN, test_limit=N_TEST,
                          eval_ratio=0.2, epochs=1, **FAST_TRAINING)


def _executions(cfg: PipelineConfig, node_ids) -> list:
    store = open_store(cfg)
    return [e for e in store.get_executions()
            if any(c.type == "node" and c.name.split(".")[-1] in node_ids
                   for c in store.get_contexts_by_execution(e.id))]


def _run_expecting_the_gate(cfg: PipelineConfig) -> str:
    with pytest.raises(DataAnomaliesError) as err:
        local_runner.run_local(cfg)
    message = str(err.value)
    assert not _executions(cfg, TRAINER_IDS), "no trainer may run on drifted data"
    assert MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name).versions() == []
    # The evidence stays: the review page named in the error exists and shows the anomalies.
    review = re.search(r"review: (\S+\.html)", message).group(1)
    assert Path(review).is_file() and "anomalies</span>" in Path(review).read_text()
    assert _executions(cfg, {"DriftValidator"}), "DriftValidator's results must be recorded"
    return message


def test_one_digit_missing_stops_the_run_before_training(shared_root, mnist_cache):
    def without_ones(images, labels):
        keep = labels != 1
        return images[keep], labels[keep]

    source = idx_folder(shared_root / "no-ones", mnist_cache, without_ones, n_train=N_TRAIN, n_test=N_TEST)
    message = _run_expecting_the_gate(_config(shared_root, source))
    assert re.search(r"\[drift/skew: train\] feature 'label': .*Linfty distance .* above the threshold 0\.06", message)
    assert "The feature value with maximum difference is: 1" in message


def test_inverted_images_stop_the_run_before_training(shared_root, mnist_cache):
    source = idx_folder(shared_root / "inverted", mnist_cache, lambda images, labels: (255 - images, labels),
                        n_train=N_TRAIN, n_test=N_TEST)
    message = _run_expecting_the_gate(_config(shared_root, source))
    for feature in ("pixel_mean", "ink_fraction"):
        assert re.search(rf"\[drift/skew: train\] feature '{feature}': .*Jensen-Shannon divergence", message)
    assert "feature 'label'" not in message  # the labels are MNIST's own: only the pixels drifted
