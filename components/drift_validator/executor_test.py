"""Real StatisticsGen, ExampleValidator and DriftValidator executors on real MNIST records, against
the checked-in baseline (full MNIST): no false alarm, and the comparators are live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tfx.components.example_validator import executor as validator_executor
from tfx.components.statistics_gen import executor as stats_executor
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts, standard_component_specs

from components import artifacts
from components.data_gate import executor as gate
from components.drift_validator import baseline as baselines
from components.drift_validator import executor
from conftest import DEFAULTS as CFG
from conftest import TEST_BEAM_ARGS, seen_in_chromium


def _artifact(cls, uri: Path):
    artifact = cls()
    uri.mkdir(parents=True, exist_ok=True)
    artifact.uri = str(uri)
    return artifact


@pytest.fixture(scope="module")
def validated(small_examples, tmp_path_factory):
    """(statistics, schema, ExampleValidator anomalies) of the small real examples."""
    root = tmp_path_factory.mktemp("validated")
    schema = _artifact(standard_artifacts.Schema, root / "schema")
    (root / "schema" / "schema.pbtxt").write_text(Path(CFG.schema_path).read_text())
    stats = _artifact(standard_artifacts.ExampleStatistics, root / "statistics")
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=TEST_BEAM_ARGS)
    stats_executor.Executor(context).Do(
        {standard_component_specs.EXAMPLES_KEY: [small_examples], standard_component_specs.SCHEMA_KEY: [schema]},
        {standard_component_specs.STATISTICS_KEY: [stats]}, {"exclude_splits": "[]"})
    anomalies = _artifact(standard_artifacts.ExampleAnomalies, root / "anomalies")
    validator_executor.Executor().Do(
        {standard_component_specs.STATISTICS_KEY: [stats], standard_component_specs.SCHEMA_KEY: [schema]},
        {standard_component_specs.ANOMALIES_KEY: [anomalies]}, {"exclude_splits": "[]"})
    return stats, schema, anomalies


def run_drift(validated, out: Path, baseline: str, label_linf: float = CFG.drift_label_linf,
              pixel_js: float = CFG.drift_pixel_js, examples=None):
    stats, schema, anomalies = validated
    drift = _artifact(standard_artifacts.ExampleAnomalies, out)
    executor.Executor().Do(
        {executor.STATISTICS: [stats], executor.SCHEMA: [schema], executor.ANOMALIES: [anomalies],
         **({executor.EXAMPLES: [examples]} if examples is not None else {})},
        {executor.DRIFT_ANOMALIES: [drift]},
        {executor.BASELINE: baseline, executor.LABEL_LINF: label_linf, executor.PIXEL_JS: pixel_js})
    return drift


def test_real_data_passes_drift_and_skew_against_the_pinned_baseline(validated, tmp_path, small_examples):
    drift = run_drift(validated, tmp_path / "drift", CFG.resolved_baseline_statistics(), examples=small_examples)
    per_split = artifacts.read_anomalies(drift)
    assert set(per_split) == {"train", "test", executor.SKEW_SPLIT}
    assert gate.describe(per_split) == []
    # The measurements are there (the comparators ran), just under their thresholds.
    measured = {(".".join(i.path.step), m.type) for i in per_split["train"].drift_skew_info
                for m in i.drift_measurements}
    assert {p for p, _ in measured} == {"label", "pixel_mean", "ink_fraction"}
    review = Path(drift.get_string_custom_property("review_html"))
    html = review.read_text()
    assert review.name == executor.REVIEW_FILE and "<html>" in html and "no anomaly" in html
    assert "Baseline statistics" in html and "pixel_mean" in html
    # Pictures first (issue #16), inline, no script, no empty table.
    assert '<p id="verdict" class="ok"><b>No anomaly</b>' in html
    for figure in ("sample-grid", "label-distribution", "pixel-histograms"):
        assert f'id="{figure}"' in html and 'src="data:image/png;base64,' in html
    assert "<script" not in html and "facets" not in html.lower()
    samples = executor.sample_images(small_examples)
    assert set(samples) == {"train", "eval", "test"}
    for images, labels in samples.values():  # the first images of each label, as many as asked
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8 and len(images) == len(labels)
        assert set(np.unique(labels, return_counts=True)[1]) == {executor.SAMPLES_PER_CLASS}
    assert "<table" not in html.split(f"{executor.SKEW_SPLIT}:")[1].split("<h2>")[0]  # no measurement, no table
    seen = seen_in_chromium(review, tmp_path / "seen")  # as a person sees it in a browser
    assert seen["text"].startswith("Data review\n\nNo anomaly") and "Sample images" in seen["text"]
    assert seen["images"] == {"sample-grid": True, "label-distribution": True, "pixel-histograms": True}
    # The gate passes.
    _, _, anomalies = validated
    gate.Executor().Do({gate.ANOMALIES: [anomalies], gate.DRIFT_ANOMALIES: [drift]}, {}, {})


def test_thresholds_from_config_are_applied_and_the_gate_names_them(validated, tmp_path):
    """Tiny thresholds: the same real data now counts as drifted, in plain words."""
    drift = run_drift(validated, tmp_path / "drift", CFG.resolved_baseline_statistics(),
                      label_linf=1e-6, pixel_js=1e-6)
    _, _, anomalies = validated
    with pytest.raises(gate.DataAnomaliesError) as err:
        gate.Executor().Do({gate.ANOMALIES: [anomalies], gate.DRIFT_ANOMALIES: [drift]}, {}, {})
    message = str(err.value)
    assert "[drift/skew: train] feature 'label'" in message and "Linfty" in message
    assert "[drift/skew: train] feature 'pixel_mean'" in message and "Jensen-Shannon" in message
    assert f"[drift/skew: {executor.SKEW_SPLIT}]" in message
    assert drift.get_string_custom_property("review_html") in message
    html = Path(drift.get_string_custom_property("review_html")).read_text()
    assert '<p id="verdict" class="bad"><b>Anomalies found</b>, the data gate stops the run: train (drift/skew)' in html


def test_baseline_from_a_statistics_artifact_folder(validated, tmp_path):
    stats, _, _ = validated
    baseline = baselines.load_baseline(stats.uri)
    assert set(baseline) == {"train", "eval", "test"}
    drift = run_drift(validated, tmp_path / "drift", stats.uri)  # itself as baseline: no drift
    assert gate.describe(artifacts.read_anomalies(drift)) == []


@pytest.mark.parametrize("content, message", [
    (None, "baseline statistics not found"),
    ("not a statistics proto {", "not a DatasetFeatureStatisticsList"),
])
def test_unreadable_baseline_is_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "baseline.pbtxt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(baselines.BaselineError, match=rf"{path}: {message}"):
        baselines.load_baseline(str(path))


def test_pinned_baseline_is_full_mnist():
    baseline = baselines.load_baseline(CFG.resolved_baseline_statistics())
    counts = {split: stats.datasets[0].num_examples for split, stats in baseline.items()}
    assert counts["test"] == 10000 and counts["train"] + counts["eval"] == 60000
    assert set(counts) == {"train", "eval", "test"}
