"""The drift baseline comes from the registry at run time: the statistics the current champion was
trained on, following the alias (a rollback included), else the pinned file. A real MLflow
registry (SQLite) with real registered models."""

from __future__ import annotations

from components.drift_validator.baseline import resolve
from components.registry import STATISTICS_TAG, MlflowRegistry, embedded_uri

PINNED = "/pinned/baseline_statistics.pbtxt"
NAME = "mnist-baseline"


def _register(registry: MlflowRegistry, model_dir, statistics: str | None):
    tags = {STATISTICS_TAG: statistics} if statistics is not None else {}
    return registry.register(str(model_dir), "pytorch", tags=tags, metrics={})


def test_baseline_follows_the_champion_alias(small_models, tmp_path):
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, NAME)
    model_dir = small_models["pytorch_model"] / "Format-Serving"
    stats = {run: tmp_path / f"stats-{run}" for run in ("run-1", "run-2")}
    for folder in stats.values():
        folder.mkdir()

    assert resolve(PINNED, True, uri, NAME).path == PINNED  # no champion yet

    first = _register(registry, model_dir, str(stats["run-1"]))
    assert resolve(PINNED, True, uri, NAME).path == PINNED  # registered, but not the champion
    registry.promote(first.version)
    chosen = resolve(PINNED, True, uri, NAME)
    assert chosen.path == str(stats["run-1"]) and f"champion version {first.version}" in chosen.source

    second = _register(registry, model_dir, str(stats["run-2"]))
    registry.promote(second.version)
    assert resolve(PINNED, True, uri, NAME).path == str(stats["run-2"])

    registry.rollback(first.version, "test")  # version 2 lost the alias: its statistics are not used
    assert resolve(PINNED, True, uri, NAME).path == str(stats["run-1"])
    assert resolve(PINNED, False, uri, NAME).path == PINNED  # asked not to follow the champion


def test_pinned_file_when_the_champion_has_no_usable_statistics(small_models, tmp_path):
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, NAME)
    model_dir = small_models["pytorch_model"] / "Format-Serving"
    registry.promote(_register(registry, model_dir, None).version)  # registered before statistics were recorded
    assert resolve(PINNED, True, uri, NAME).path == PINNED
    registry.promote(_register(registry, model_dir, str(tmp_path / "deleted-stats")).version)
    assert resolve(PINNED, True, uri, NAME).path == PINNED  # gone from the artifact store
    assert resolve("", True, uri, NAME).path == ""  # drift checks off: no baseline at all
