"""The champion shift alarm ([gates] item 3) on real data, through the real evaluator and pusher
against a real (SQLite) MLflow registry: a champion trained and registered on real MNIST, then a
dataset whose digits all moved a few pixels off-centre, with a challenger trained on it. The
champion collapses on the new test split; by default the run stops with "the data changed under
the champion" and registers nothing; with shift_alarm_action register the challenger is
registered and the alias stays. A fresh real test split (other digits, no shift) does not fire it.

The data gate's image drift check would stop the shifted dataset before training (tests/
test_data_gates_e2e.py); the alarm is the last line behind it, for a change the gate does not see,
so this test hands the shifted examples to the evaluator directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components import registry
from components.image_validator.geometry_test import shifted
from components.mnist_example_gen.sources import MNIST_FILES
from components.registry_pusher import executor as pusher
from components.registry_pusher.executor_test import run_pusher
from conftest import resolve_champion, run_evaluator, run_example_gen, train, write_idx
from tests.test_data_bad_inputs import real_records

NAME = "mnist-shift"


def user_dataset(folder: Path, train_records, test_records, out: Path):
    """The user's four IDX files, ingested by the real MnistExampleGen (all records, no checksums)."""
    folder.mkdir(parents=True)
    for part, (images, labels) in (("train", train_records), ("test", test_records)):
        write_idx(str(folder / (MNIST_FILES[f"{part}_images"].name + ".gz")), images)
        write_idx(str(folder / (MNIST_FILES[f"{part}_labels"].name + ".gz")), labels)
    return run_example_gen(out, folder.parent / "cache", source=str(folder), verify_checksums=0, train_limit=0,
                           test_limit=0)


@pytest.fixture(scope="module")
def champion_registry(small_examples, small_models, tmp_path_factory):
    """A registry whose champion (version 1) won a real bake-off on real MNIST: its recorded accuracy."""
    root = tmp_path_factory.mktemp("champion")
    uri = registry.embedded_uri(str(root / "registry"))
    _, blessing = run_evaluator(small_examples, small_models, root, min_accuracy=0.0)
    run_pusher(root, root / "evaluation", blessing, small_models, uri, NAME)
    champion = registry.MlflowRegistry(uri, NAME).champion()
    assert champion is not None and float(champion.tags["accuracy"]) > 0.8
    return uri


@pytest.fixture(scope="module")
def moved_data(mnist_cache, tmp_path_factory):
    """Every digit 3 pixels right and down, and a challenger trained on them: {"examples", "models"}."""
    root = tmp_path_factory.mktemp("moved")
    (train_images, train_labels), (test_images, test_labels) = (real_records(mnist_cache, "train", 3000),
                                                                real_records(mnist_cache, "t10k", 1000))
    examples = user_dataset(root / "source", (shifted(train_images, 3, 3), train_labels),
                            (shifted(test_images, 3, 3), test_labels), root / "examples")
    from trainers import keras_trainer

    return {"examples": examples, "models": {"keras_model": train(keras_trainer.run_fn, examples, root / "keras")}}


def judge(champion_registry, data, models, tmp_path, **rule):
    """The real evaluator against the champion the real ChampionResolver reads now."""
    champion, _ = resolve_champion(champion_registry, NAME, tmp_path / "resolved")
    evaluation, blessing = run_evaluator(data, models, tmp_path, min_accuracy=0.5, champion=champion, **rule)
    return evaluation, blessing, champion


def test_the_alarm_fires_on_moved_digits_and_the_run_stops_with_nothing_registered(champion_registry, moved_data,
                                                                                   tmp_path):
    evaluation, blessing, champion = judge(champion_registry, moved_data["examples"], moved_data["models"], tmp_path)
    alarm = evaluation["decision"]["gates"]["champion_shift"]
    champion_now = evaluation["candidates"]["champion"]["metrics"]["accuracy"]
    assert alarm["applied"] and alarm["fired"] and alarm["action"] == "stop"
    assert champion_now < float(registry.MlflowRegistry(champion_registry, NAME).champion().tags["accuracy"]) - 0.2
    # The challenger trained on the moved digits beats the collapsed champion: without the alarm, promoted.
    assert alarm["blessed_otherwise"] and not blessing.get_int_custom_property("blessed")
    fired = [r for r in evaluation["decision"]["reasons"] if r.startswith("champion shift alarm FIRED")]
    assert len(fired) == 1 and "the data changed under the champion" in fired[0]
    with pytest.raises(pusher.ChampionShiftError, match="the data changed under the champion.*nothing registered"):
        run_pusher(tmp_path, tmp_path / "evaluation", blessing, moved_data["models"], champion_registry, NAME,
                   champion=champion)
    reg = registry.MlflowRegistry(champion_registry, NAME)
    assert [v.version for v in reg.versions()] == ["1"] and reg.champion().version == "1"


def test_with_action_register_the_challenger_is_registered_for_a_person_and_the_alias_stays(
        champion_registry, moved_data, tmp_path):
    evaluation, blessing, champion = judge(champion_registry, moved_data["examples"], moved_data["models"], tmp_path,
                                           shift_alarm_action="register")
    assert evaluation["decision"]["gates"]["champion_shift"]["fired"]
    pushed = run_pusher(tmp_path, tmp_path / "evaluation", blessing, moved_data["models"], champion_registry, NAME,
                        champion=champion)
    reg = registry.MlflowRegistry(champion_registry, NAME)
    [new] = [v for v in reg.versions() if v.version != "1"]
    assert reg.champion().version == "1" and pushed.get_int_custom_property("champion") == 0
    assert "the data changed under the champion" in new.tags[registry.NOT_PROMOTED_TAG]
    assert f"registry promote {new.version}" in new.tags[registry.NOT_PROMOTED_TAG]


def test_a_fresh_real_test_split_does_not_fire_it(champion_registry, small_models, mnist_cache, tmp_path):
    (train_images, train_labels) = real_records(mnist_cache, "train", 3000)
    other_digits = tuple(part[5000:6000] for part in real_records(mnist_cache, "t10k", 6000))
    fresh = user_dataset(tmp_path / "source", (train_images, train_labels), other_digits, tmp_path / "examples")
    evaluation, _, _ = judge(champion_registry, fresh, small_models, tmp_path)
    alarm = evaluation["decision"]["gates"]["champion_shift"]
    assert alarm["applied"] and not alarm["fired"]
    assert any(r.startswith("champion shift alarm not fired: ") for r in evaluation["decision"]["reasons"])
    # Other digits score differently (the canonical test split's second half is the easier one),
    # but not worse by the minimum drop: sampling, not a shift.
    recorded = float(registry.MlflowRegistry(champion_registry, NAME).champion().tags["accuracy"])
    assert alarm["recorded_accuracy"] == pytest.approx(recorded) and alarm["examples"] == 1000
    assert alarm["drop"] < alarm["min_drop"] and np.isfinite(alarm["p_value"])
