"""The real pusher against a real (temporary, SQLite) MLflow registry."""

from __future__ import annotations

import numpy as np
import pytest
from tfx.types import standard_artifacts

from components import examples as example_data
from components import registry
from components.registry_pusher import executor
from conftest import load_champion_pyfunc, run_evaluator

MODEL_NAME = "mnist-test"


def run_pusher(tmp_path, evaluation_dir, blessing, small_models, registry_uri, model_name=MODEL_NAME):
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(evaluation_dir)
    inputs = {"evaluation": [evaluation], "blessing": [blessing]}
    for name, uri in small_models.items():
        model = standard_artifacts.Model()
        model.uri = str(uri)
        inputs[name] = [model]
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    (tmp_path / "pushed").mkdir()
    executor.Executor().Do(inputs, {"pushed_model": [pushed]},
                           {"registry_uri": registry_uri, "registered_model_name": model_name})
    return pushed


def test_blessed_winner_is_registered_and_becomes_champion(small_examples, small_models, tmp_path):
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0)
    uri = registry.embedded_uri(str(tmp_path / "registry"))
    pushed = run_pusher(tmp_path, tmp_path / "evaluation", blessing, small_models, uri)
    assert pushed.get_int_custom_property("pushed") == 1
    reg = registry.MlflowRegistry(uri, MODEL_NAME)
    champion = reg.champion()
    assert champion is not None and champion.version == "1" and "champion" in champion.aliases
    winner = evaluation["decision"]["winner"]
    assert champion.tags["candidate"] == winner
    assert champion.tags["framework"] == evaluation["candidates"][winner]["framework"]
    assert champion.tags["data_sha256"] == evaluation["data"]["examples_sha256"]
    assert champion.tags["replaced_version"] == ""
    # The registered pyfunc, loaded through the alias, scores what the evaluator recorded.
    model = load_champion_pyfunc(reg)
    images, labels = example_data.load_split(small_examples, "test")
    accuracy = (np.asarray(model.predict(images)).argmax(1) == labels).mean()
    assert accuracy == pytest.approx(evaluation["candidates"][winner]["metrics"]["accuracy"], abs=1e-12)


def test_not_blessed_pushes_nothing(small_examples, small_models, tmp_path):
    _, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.9999)
    uri = registry.embedded_uri(str(tmp_path / "registry"))
    pushed = run_pusher(tmp_path, tmp_path / "evaluation", blessing, small_models, uri)
    assert pushed.get_int_custom_property("pushed") == 0
    assert "below the minimum" in pushed.get_string_custom_property("reason")
    reg = registry.MlflowRegistry(uri, MODEL_NAME)
    assert reg.champion() is None
    assert reg.versions() == []


def test_long_tag_values_are_cut_to_what_a_sql_registry_stores():
    from components.tracking import TAG_VALUE_LIMIT, fit_tag

    assert fit_tag("short") == "short"
    cut = fit_tag("reason | " * 1000)
    assert len(cut) == TAG_VALUE_LIMIT == 5000 and cut.endswith("(cut: the whole text is in evaluation.json)")
