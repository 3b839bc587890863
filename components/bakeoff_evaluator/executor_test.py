"""The real evaluator on two real (small) models, one Keras and one PyTorch."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from components.bakeoff_evaluator import executor
from conftest import run_evaluator
from trainers import serving


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
    images, labels = executor.load_split(small_examples, "test")
    for name, c in evaluation["candidates"].items():
        assert c["metrics"]["examples"] == 1000
        assert np.array(c["metrics"]["confusion_matrix"]).sum() == 1000
        # The recorded accuracy is what the exported model really scores on these examples.
        predict, _ = serving.load_predictor(str(small_models[name] / "Format-Serving"))
        assert (predict(images).argmax(1) == labels).mean() == c["metrics"]["accuracy"]
        perf = c["performance"]
        assert 0 < perf["latency_ms_p50"] <= perf["latency_ms_p95"] and perf["throughput_per_s"] > 0
        assert c["size_bytes"] > 54_410 * 4 and c["parameters"] == 54_410
    [pair] = evaluation["comparisons"]
    assert 0.0 <= pair["p_value"] <= 1.0
    d = evaluation["decision"]
    assert d["blessed"] and d["winner"] in evaluation["candidates"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_string_custom_property("winner") == d["winner"]
    report = (tmp_path / "evaluation" / "report.html").read_text()
    assert d["winner"] in report and 'id="confusion-matrices" alt="confusion matrices" src="data:image/png' in report
    assert "| keras_model" in (tmp_path / "evaluation" / "summary.md").read_text()
    assert "no champion in the registry" in " ".join(d["reasons"])


def test_not_blessed_below_the_minimum(small_examples, small_models, tmp_path):
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.999)
    assert not evaluation["decision"]["blessed"]
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
    for figure in ("confusion-matrices", "per-digit", "reliability", "misclassified"):
        assert f'id="{figure}"' in dom.stdout and "data:image/png;base64," in dom.stdout
    assert "Uncaught" not in dom.stderr
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1400) and pixels.std() > 10  # text, tables and figures, not a blank page
