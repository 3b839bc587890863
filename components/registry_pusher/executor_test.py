"""The real pusher against a real (temporary, SQLite) MLflow registry, judged against the champion
state the real ChampionResolver read."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tfx.types import standard_artifacts

from components import examples as example_data
from components import image_checks, image_hashes, registry
from components.registry_pusher import executor
from conftest import load_champion_pyfunc, resolve_champion, run_evaluator, run_image_validator

MODEL_NAME = "mnist-test"


def run_pusher(tmp_path, evaluation_dir, blessing, small_models, registry_uri, model_name=MODEL_NAME,
               champion=None, statistics=None, image_statistics=None, lock_uri=""):
    """The real pusher; `champion`: what the run resolved (default: ChampionResolver's reading now)."""
    if champion is None:
        champion, _ = resolve_champion(registry_uri, model_name, tmp_path / "resolved")
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(evaluation_dir)
    inputs = {"evaluation": [evaluation], "blessing": [blessing], "champion": [champion],
              **({"statistics": [statistics]} if statistics is not None else {}),
              **({"image_statistics": [image_statistics]} if image_statistics is not None else {})}
    for name, uri in small_models.items():
        model = standard_artifacts.Model()
        model.uri = str(uri)
        inputs[name] = [model]
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    (tmp_path / "pushed").mkdir(exist_ok=True)
    executor.Executor().Do(inputs, {"pushed_model": [pushed]},
                           {"registry_uri": registry_uri, "registered_model_name": model_name,
                            "registry_lock_uri": lock_uri})
    return pushed


def test_blessed_winner_is_registered_signed_and_becomes_champion(small_examples, small_models, tmp_path):
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0)
    uri = registry.embedded_uri(str(tmp_path / "registry"))
    image_statistics, _, _ = run_image_validator(small_examples, tmp_path / "images")
    pushed = run_pusher(tmp_path, tmp_path / "evaluation", blessing, small_models, uri,
                        image_statistics=image_statistics)
    assert pushed.get_int_custom_property("pushed") == 1 and pushed.get_int_custom_property("champion") == 1
    reg = registry.MlflowRegistry(uri, MODEL_NAME)
    champion = reg.champion()
    assert champion is not None and champion.version == "1" and "champion" in champion.aliases
    assert pushed.get_string_custom_property("model_source") == champion.source
    winner = evaluation["decision"]["winner"]
    assert champion.tags["candidate"] == winner
    assert champion.tags["framework"] == evaluation["candidates"][winner]["framework"]
    assert champion.tags["data_sha256"] == evaluation["data"]["examples_sha256"]
    assert champion.tags["evaluated_against"].startswith(f"{MODEL_NAME}@champion: no champion, revision 0")
    assert reg.champion_state().revision == "1"
    # Every file it was registered with is signed and verifies; the training images' statistics and
    # fingerprints travel with it, where ChampionResolver and the next ImageValidator find them.
    verified = reg.download_verified(champion, str(tmp_path / "download"))
    assert {"identity.json", "evaluation/evaluation.json", "evaluation/report.html"} <= set(verified.signed_files)
    train_images, _ = example_data.load_split(small_examples, "train")
    images_baseline = verified.baseline(f"{image_checks.CHAMPION_IMAGES_DIR}/Split-train")
    recorded = image_hashes.load(os.path.join(images_baseline, image_checks.HASHES_FILE))
    assert np.array_equal(recorded["exact"], image_hashes.exact_hashes(train_images))
    assert os.path.isfile(os.path.join(images_baseline, image_checks.FEATURE_STATS_FILE))
    resolved, statistics = resolve_champion(uri, MODEL_NAME, tmp_path / "next-run")
    next_run = image_checks.split_folder(image_checks.champion_images(statistics.uri), "train")
    assert np.array_equal(image_hashes.load(os.path.join(next_run, image_checks.HASHES_FILE))["exact"],
                          recorded["exact"])
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


def test_a_champion_that_moved_since_the_run_resolved_it_keeps_the_alias(small_examples, small_models, tmp_path):
    """The run resolved "no champion"; meanwhile another push made version 1 champion: this run's
    version is registered, the alias stays, and both say why."""
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0)
    uri = registry.embedded_uri(str(tmp_path / "registry"))
    resolved, _ = resolve_champion(uri, MODEL_NAME, tmp_path / "resolved-before")
    reg = registry.MlflowRegistry(uri, MODEL_NAME)
    other = reg.register(str(small_models["keras_model"] / "Format-Serving"), "keras", tags={}, metrics={})
    reg.promote(other.version)
    pushed = run_pusher(tmp_path, tmp_path / "evaluation", blessing, {"pytorch_model": small_models["pytorch_model"],
                        "keras_model": small_models["keras_model"]}, uri, champion=resolved)
    reason = pushed.get_string_custom_property("reason")
    assert pushed.get_int_custom_property("pushed") == 1 and pushed.get_int_custom_property("champion") == 0
    assert reason.startswith("the champion changed since this run resolved it (now version 1, revision 1)")
    assert reg.champion().version == other.version
    mine = reg.version(pushed.get_string_custom_property("registered_version"))
    assert mine.tags[registry.NOT_PROMOTED_TAG] == reason and "champion" not in mine.aliases


def test_long_tag_values_are_cut_to_what_a_sql_registry_stores():
    from components.tracking import TAG_VALUE_LIMIT, fit_tag

    assert fit_tag("short") == "short"
    cut = fit_tag("reason | " * 1000)
    assert len(cut) == TAG_VALUE_LIMIT == 5000 and cut.endswith("(cut: the whole text is in evaluation.json)")


def test_decision_record_is_json_where_it_is_structured(small_examples, small_models, tmp_path):
    evaluation, _ = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0)
    tags = executor.decision_tags(evaluation, "run-1", "", "abc123")
    assert json.loads(tags["decision_rule"])["primary_metric"] == "accuracy"
    assert tags["code_revision"] == "abc123" and tags["pipeline_run_id"] == "run-1"
