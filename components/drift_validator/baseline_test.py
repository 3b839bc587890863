"""The drift baseline comes from the run's inputs: the statistics ChampionResolver emitted for the
champion when it has them, else the pinned file; never from the registry at run time."""

from __future__ import annotations

from tfx.types import artifact_utils, standard_artifacts

from components import champion
from components.drift_validator.baseline import resolve

PINNED = "/pinned/baseline_statistics.pbtxt"


def _champion_statistics(tmp_path, present: bool, splits: list[str]) -> standard_artifacts.ExampleStatistics:
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(tmp_path / "champion-statistics")
    artifact.split_names = artifact_utils.encode_split_names(splits)
    champion.set_properties(artifact, {champion.PRESENT: present, champion.VERSION: "3" if present else "",
                                       champion.REGISTERED_MODEL: "mnist-digits",
                                       champion.WHY_ABSENT: "" if present else "no champion: none yet"})
    return artifact


def test_the_champions_statistics_are_the_baseline(tmp_path):
    stats = _champion_statistics(tmp_path, True, ["train", "eval", "test"])
    chosen = resolve(PINNED, True, stats)
    assert chosen.path == stats.uri and chosen.source == "the statistics of champion version 3 of mnist-digits"
    assert resolve(PINNED, False, stats).path == PINNED  # asked not to follow the champion
    assert resolve("", True, stats).path == ""  # drift checks off: no baseline at all


def test_the_pinned_file_without_a_champion_with_statistics(tmp_path):
    none = resolve(PINNED, True, _champion_statistics(tmp_path, False, []))
    assert none.path == PINNED and "no champion: none yet" in none.source
    older = resolve(PINNED, True, _champion_statistics(tmp_path, True, []))
    assert older.path == PINNED and "registered without its training statistics" in older.source
    assert resolve(PINNED, True, None).path == PINNED
