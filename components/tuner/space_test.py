"""The search space as data: one shape for both frameworks, mixed precision searched only where it
applies, the untuned baseline only when it lies inside, KerasTuner's config of every kind."""

from __future__ import annotations

import keras_tuner
import optuna
import pytest

from components.tuner import space
from trainers.config import TrainConfig


def test_the_space_is_the_same_for_both_frameworks_and_round_trips():
    dims = space.search_space(TrainConfig())
    assert [d.name for d in dims] == ["learning_rate", "batch_size", "lr_schedule", "augment_shift", "width",
                                      "mixed_precision"]
    assert space.from_json(space.to_json(dims)) == dims
    assert space.fingerprint(dims) != space.fingerprint(dims[:-1])


def test_mixed_precision_is_searched_only_on_an_accelerator():
    assert space.search_space(TrainConfig(accelerator="gpu"))[-1].choices == (False, True)
    assert space.search_space(TrainConfig(accelerator="auto"))[-1].choices == (False,)
    assert space.search_space(TrainConfig(accelerator="cpu", mixed_precision=True))[-1].choices == (True,)


def test_the_baseline_is_the_train_sections_point_when_inside():
    dims = space.search_space(TrainConfig())
    assert space.point_of(TrainConfig(), dims) == {"learning_rate": 3e-3, "batch_size": 128,
                                                   "lr_schedule": "one_cycle", "augment_shift": 2, "width": 1.0,
                                                   "mixed_precision": False}
    assert space.point_of(TrainConfig(batch_size=100), dims) is None  # no untuned trial to compare with


def test_a_dimension_names_a_setting_and_one_kind_of_range():
    with pytest.raises(ValueError, match="'dropout' is no training setting"):
        space.Dimension("dropout", 0.0, 0.5)
    with pytest.raises(ValueError, match="either low and high, or choices"):
        space.Dimension("width", 0.5, 2.0, choices=(1.0,))
    with pytest.raises(ValueError, match="low 3 must be below high 1"):
        space.Dimension("augment_shift", 3, 1)


def test_sampled_points_lie_in_the_space_and_make_kerastuner_configs():
    dims = space.search_space(TrainConfig(accelerator="gpu"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        point = space.suggest(study.ask(), dims)
        assert all(d.contains(point[d.name]) for d in dims)
        assert isinstance(point["augment_shift"], int) and isinstance(point["mixed_precision"], bool)
        config = space.hyperparameters_config(dims, point)
        assert keras_tuner.HyperParameters.from_config(config).values == point
        assert TrainConfig().tuned(config).batch_size == point["batch_size"]
