"""The real evaluator on two real (small) models, one Keras and one PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from components import examples as example_data
from components.bakeoff_evaluator import corruptions, executor, metrics
from conftest import run_evaluator, seen_in_chromium
from trainers import loader


@pytest.fixture(scope="module")
def bakeoff(small_examples, small_models, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bakeoff")
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0)
    return evaluation, blessing, tmp_path


def test_both_models_scored_on_the_same_examples(small_examples, small_models, bakeoff):
    evaluation, blessing, tmp_path = bakeoff
    assert evaluation["version"] == executor.FORMAT_VERSION
    assert evaluation["data"]["examples"] == 1000 and len(evaluation["data"]["examples_sha256"]) == 64
    assert set(evaluation["candidates"]) == {"keras_model", "pytorch_model"}
    assert {c["framework"] for c in evaluation["candidates"].values()} == {"keras", "pytorch"}
    images, labels = example_data.load_split(small_examples, "test")
    for name, c in evaluation["candidates"].items():
        assert c["metrics"]["examples"] == 1000
        assert np.array(c["metrics"]["confusion_matrix"]).sum() == 1000
        # The recorded accuracy is what the exported model really scores on these examples.
        predict, _ = loader.load_predictor(str(small_models[name] / "Format-Serving"))
        assert (predict(images).argmax(1) == labels).mean() == c["metrics"]["accuracy"]
        perf = c["performance"]
        assert 0 < perf["latency_ms_p50"] <= perf["latency_ms_p95"] and perf["throughput_per_s"] > 0
        assert c["size_bytes"] > 54_410 * 4 and c["parameters"] == 54_410
        # How it was trained (issue #16): the trainer's own history and time, the split's size.
        t = c["training"]
        assert len(t["history"]["val_accuracy"]) == t["epochs"] >= 1 and t["seconds"] > 0
        assert t["examples_per_second"] == pytest.approx(
            json.loads(small_examples.get_string_custom_property("split_counts"))["train"] * t["epochs"] / t["seconds"])
    [pair] = evaluation["comparisons"]
    assert 0.0 <= pair["p_value"] <= 1.0
    d = evaluation["decision"]
    assert d["blessed"] and d["winner"] in evaluation["candidates"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_string_custom_property("winner") == d["winner"]
    report = (tmp_path / "evaluation" / "report.html").read_text()
    assert d["winner"] in report and 'id="confusion-matrices" alt="confusion matrices" src="data:image/png' in report
    assert 'id="training-curves" alt="training curves per epoch" src="data:image/png' in report
    assert 'id="frameworks"' in report and "tf_saved_model" in report and "state_dict" in report
    assert "| keras_model" in (tmp_path / "evaluation" / "summary.md").read_text()
    assert "no champion in the registry" in " ".join(d["reasons"])


def _records(examples, split="test"):
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(tf.io.gfile.glob(example_data.split_pattern(examples, split)), compression_type="GZIP")
    return [r.numpy() for r in ds]


def test_ties_intervals_and_the_corrupted_copy(small_examples, small_models, bakeoff):
    """Issue #15: ties said out loud, bootstrap intervals, the corrupted copy scored in the same pass."""
    evaluation, blessing, tmp_path = bakeoff
    d = evaluation["decision"]
    [pair] = evaluation["comparisons"]
    low, high = pair["accuracy_difference_ci95"]
    accuracy = {n: c["metrics"]["accuracy"] for n, c in evaluation["candidates"].items()}
    assert pair["accuracy_difference"] == pytest.approx(accuracy[pair["first"]] - accuracy[pair["second"]])
    assert low <= pair["accuracy_difference"] <= high
    assert evaluation["bootstrap"]["seed"] == metrics.BOOTSTRAP_SEED
    tied = pair["p_value"] >= d["rule"]["champion_alpha"]
    assert d["statistical_tie"] is tied and d["tied_with"] == ([d["ranking"][1]] if tied else [])
    assert any(("statistically tied" if tied else "statistically significant") in r for r in d["reasons"])
    assert blessing.get_int_custom_property("statistical_tie") == int(tied)
    from components.registry_pusher.executor import decision_tags

    assert decision_tags(evaluation, "run", "", "rev")["statistical_tie"] == str(tied).lower()
    assert {"corruption", "slices", "champion_shift"} == set(d["gates"])
    assert not any(g["applied"] for g in d["gates"].values())

    robustness = evaluation["robustness"]
    assert robustness["names"] == list(corruptions.NAMES) and robustness["examples"] == 1000
    assert robustness["seed"] == corruptions.SEED and len(robustness["sha256"]) == 64
    per_example = robustness["corruptions_per_example"]
    assert per_example == corruptions.DEFAULT_PER_EXAMPLE and robustness["corrupted_images"] == 1000 * per_example
    # The recorded accuracies are what the exported models score on the corrupted copy made directly
    # from the records (the same checksum), and what each model's clean accuracy is.
    records = _records(small_examples)
    images, labels = example_data.load_split(small_examples, "test")
    keys = corruptions.record_keys(records)
    assigned = corruptions.assignment(keys, per_example)
    corrupted = corruptions.corrupt(images, keys, assigned=assigned)
    assert robustness["sha256"] == corruptions.combined_sha256(
        {c: f"{corruptions.xor_digests(corrupted[c]):064x}" for c in corruptions.NAMES})
    for name, c in evaluation["candidates"].items():
        predict, _ = loader.load_predictor(str(small_models[name] / "Format-Serving"))
        for k, corruption in enumerate(corruptions.NAMES):
            expected = (predict(corrupted[corruption]).argmax(1) == labels[assigned[k]]).mean()
            assert c["robustness"]["examples"][corruption] == assigned[k].sum()
            assert c["robustness"]["per_corruption"][corruption] == pytest.approx(expected, abs=0.015), (name, k)
        per = c["robustness"]["per_corruption"]
        assert c["robustness"]["mean_accuracy"] == pytest.approx(np.mean(list(per.values())))
        assert c["robustness"]["mean_accuracy"] < c["metrics"]["accuracy"]

    report = (tmp_path / "evaluation" / "report.html").read_text()
    assert 'id="statistical-tie"' in report and 'id="robustness"' in report and "paired bootstrap 95 % CI" in report
    assert 'id="corruption-examples" alt="example corrupted digits" src="data:image/png' in report
    summary = (tmp_path / "evaluation" / "summary.md").read_text()
    assert "statistical tie: " in summary and "| occlusion | mean |" in summary


def test_not_blessed_below_the_minimum(small_examples, small_models, bakeoff, tmp_path):
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.999)
    assert not evaluation["decision"]["blessed"]
    # A second run on the same examples: the same corrupted copy, the same scores on it, the same intervals.
    first = bakeoff[0]
    assert evaluation["robustness"] == first["robustness"]
    assert {n: c["robustness"] for n, c in evaluation["candidates"].items()} == {
        n: c["robustness"] for n, c in first["candidates"].items()}
    assert evaluation["comparisons"] == first["comparisons"]
    assert blessing.get_int_custom_property("blessed") == 0
    assert (tmp_path / "blessing" / "NOT_BLESSED").exists()


def test_report_renders_in_a_headless_browser(bakeoff):
    """Debian's chromium loads report.html; the DOM has every figure inlined; the screenshot is not blank."""
    from PIL import Image

    _, _, tmp_path = bakeoff
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: `make test` installs Debian's chromium package"
    report = tmp_path / "evaluation" / "report.html"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,2400"]
    dom = subprocess.run([*flags, "--enable-logging=stderr", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for figure in ("confusion-matrices", "per-class", "reliability", "misclassified", "corruption-examples",
                   "training-curves"):
        assert f'id="{figure}"' in dom.stdout and "data:image/png;base64," in dom.stdout
    assert "Uncaught" not in dom.stderr
    # What a person sees (issue #16): the winner and the tie statement as text, every figure loaded.
    evaluation = bakeoff[0]
    seen = seen_in_chromium(report, tmp_path / "seen")
    assert f"Winner: {evaluation['decision']['winner']}" in seen["text"]
    assert "Statistical tie: " in seen["text"] and "The frameworks side by side" in seen["text"]
    assert seen["images"] and all(seen["images"].values()), seen["images"]
    assert {"training-curves", "confusion-matrices", "corruption-examples"} <= set(seen["images"])
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1400) and pixels.std() > 10  # text, tables and figures, not a blank page
