"""The trainers' side of tuning: the width knob (the same architecture and parameter count in both
frameworks at every width), tuned values applied over the training settings, and the per-epoch
trial entry point each trainer offers the tuner (real training on a few hundred real images)."""

from __future__ import annotations

import json
import os

import pytest

from trainers import common, keras_trainer, loader, machine, torch_model, torch_trainer
from trainers.trial import TrialData

TRIAL_SETTINGS = {"model": "seed_cnn", "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "constant",
                  "accelerator": "cpu", "seed": 1}


@pytest.mark.parametrize("name", common.MODEL_NAMES)
@pytest.mark.parametrize("width", [0.5, 1.5])
def test_width_scales_both_frameworks_alike(name, width):
    keras_params = keras_trainer.count_trainable(keras_trainer.build_model(name, 10, width))
    torch_params = torch_model.count_parameters(torch_model.build_model(name, 10, width))
    assert keras_params == torch_params
    at_one = torch_model.count_parameters(torch_model.build_model(name, 10))
    assert (torch_params < at_one) if width < 1 else (torch_params > at_one)
    assert at_one == {"seed_cnn": 54_410, "bn_cnn": 165_746}[name]  # width 1: the architectures as described


def test_tuned_values_apply_over_the_training_settings():
    base = common.TrainConfig()
    # KerasTuner's HyperParameters config, as TFX's Trainer reads it from a HyperParameters artifact.
    config = {"space": [{"class_name": "Float", "config": {"name": "learning_rate"}}],
              "values": {"learning_rate": 0.01, "batch_size": 64, "width": 1.5, "lr_schedule": "constant",
                         "augment_shift": 0, "mixed_precision": False}}
    tuned = common.TrainConfig.from_custom_config(base.as_custom_config(), config)
    assert (tuned.learning_rate, tuned.batch_size, tuned.width, tuned.lr_schedule, tuned.augment_shift) == (
        0.01, 64, 1.5, "constant", 0)
    assert tuned.epochs == base.epochs and tuned.model == base.model  # what was not tuned stays
    assert common.TrainConfig.from_custom_config(base.as_custom_config(), None) == base
    assert base.tuned({"batch_size": 32}).batch_size == 32  # a plain {name: value} too
    with pytest.raises(ValueError, match=r"hyperparameters \['dropout'\] are no training setting"):
        base.tuned({"values": {"dropout": 0.3}, "space": []})
    with pytest.raises(ValueError, match="width must be 0.25..4.0, got 8.0"):
        base.tuned({"width": 8})


@pytest.mark.parametrize("trainer", [keras_trainer, torch_trainer], ids=["keras", "pytorch"])
def test_a_trial_reports_every_epoch_and_stops_when_told(small_examples, trainer):
    data = TrialData(train_files=[os.path.join(small_examples.uri, "Split-train", "*")],
                     eval_files=[os.path.join(small_examples.uri, "Split-eval", "*")], examples=320, epochs=3)
    reports: list[tuple[int, float]] = []

    def stop_after_two(epoch: int, metrics: dict[str, float]) -> bool:
        reports.append((epoch, metrics["val_accuracy"]))
        return epoch < 2

    result = trainer.tune_trial(common.TrainConfig(**TRIAL_SETTINGS), data, stop_after_two)
    assert [epoch for epoch, _ in reports] == [1, 2]
    assert result.epochs_run == 2 and result.examples == 320
    assert result.history["val_accuracy"] == [accuracy for _, accuracy in reports]
    assert all(0.0 <= accuracy <= 1.0 for _, accuracy in reports)
    assert result.parameters == 54_410 and result.device == "cpu"
    assert result.mixed_precision == (machine.cpu_precision("auto") == "bfloat16")  # as run_fn decides

    finished = trainer.tune_trial(common.TrainConfig(**TRIAL_SETTINGS, width=0.5), data, lambda epoch, m: True)
    assert finished.epochs_run == 3 and finished.parameters < 54_410


@pytest.mark.parametrize("run_fn, framework", [(keras_trainer.run_fn, "keras"), (torch_trainer.run_fn, "pytorch")])
def test_run_fn_trains_with_the_tuned_values(small_examples, tmp_path, run_fn, framework):
    """fn_args.hyperparameters (what TFX's Trainer reads from the Tuner's HyperParameters artifact)
    reach the model: the export has the tuned width and loads as such."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from components import examples as examples_lib

    serving = tmp_path / "Format-Serving"
    run_fn(FnArgs(train_files=[os.path.join(small_examples.uri, "Split-train", "*")],
                  eval_files=[os.path.join(small_examples.uri, "Split-eval", "*")],
                  serving_model_dir=str(serving), model_run_dir=str(tmp_path / "run"),
                  custom_config={**TRIAL_SETTINGS, "epochs": 1},
                  hyperparameters={"space": [], "values": {"width": 0.5, "batch_size": 64, "learning_rate": 0.002}}))
    meta = json.loads((serving / "model_meta.json").read_text())
    assert (meta["config"]["width"], meta["config"]["batch_size"], meta["config"]["learning_rate"]) == (0.5, 64, 0.002)
    assert meta["width"] == 0.5
    assert meta["parameters"] == torch_model.count_parameters(torch_model.build_model("seed_cnn", 10, 0.5))
    predict, loaded = loader.load_predictor(str(serving))
    images, _ = examples_lib.load_split(small_examples, "test", limit=16)
    assert predict(images).shape == (16, 10) and loaded["framework"] == framework
