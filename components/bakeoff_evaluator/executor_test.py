"""The real evaluator on two real (small) models, one Keras and one PyTorch."""

from __future__ import annotations

import numpy as np

from components.bakeoff_evaluator import executor
from conftest import run_evaluator
from trainers import serving


def test_both_models_scored_on_the_same_examples(small_examples, small_models, tmp_path):
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0)
    assert evaluation["version"] == executor.FORMAT_VERSION
    assert evaluation["data"]["examples"] == 1000 and len(evaluation["data"]["sha256"]) == 64
    assert set(evaluation["candidates"]) == {"keras_model", "pytorch_model"}
    assert {c["framework"] for c in evaluation["candidates"].values()} == {"keras", "pytorch"}
    images, labels = executor.load_split(small_examples, "test")
    for name, c in evaluation["candidates"].items():
        assert c["metrics"]["examples"] == 1000
        assert np.array(c["metrics"]["confusion_matrix"]).sum() == 1000
        # The recorded accuracy is what the exported model really scores on these examples.
        predict, _ = serving.load_predictor(str(small_models[name] / "Format-Serving"))
        assert (predict(images).argmax(1) == labels).mean() == c["metrics"]["accuracy"]
    [pair] = evaluation["comparisons"]
    assert 0.0 <= pair["p_value"] <= 1.0
    d = evaluation["decision"]
    assert d["blessed"] and d["winner"] in evaluation["candidates"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_string_custom_property("winner") == d["winner"]
    report = (tmp_path / "evaluation" / "report.html").read_text()
    assert d["winner"] in report and "Confusion matrix" in report
    assert "| keras_model | keras |" in (tmp_path / "evaluation" / "summary.md").read_text()


def test_not_blessed_below_the_minimum(small_examples, small_models, tmp_path):
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.999)
    assert not evaluation["decision"]["blessed"]
    assert blessing.get_int_custom_property("blessed") == 0
    assert (tmp_path / "blessing" / "NOT_BLESSED").exists()
