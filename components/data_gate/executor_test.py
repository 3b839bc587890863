"""DataGate's reading of real TFDV anomalies: every anomaly in words, measurements under their
threshold are not anomalies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow_data_validation as tfdv

from components.data_gate.executor import describe
from components.drift_validator.executor import comparator_anomalies, with_comparators
from conftest import DEFAULTS


def _stats(labels: np.ndarray, schema):
    frame = pd.DataFrame({"label": labels.astype(np.int64), "pixel_mean": np.full(len(labels), 33.0, np.float32),
                          "ink_fraction": np.full(len(labels), 0.19, np.float32)})
    return tfdv.generate_statistics_from_dataframe(frame, tfdv.StatsOptions(schema=schema))


def test_drift_measurements_under_threshold_pass_and_over_threshold_are_named():
    schema = tfdv.load_schema_text(DEFAULTS.schema_path)
    schema.feature.remove(tfdv.get_feature(schema, "image"))
    schema = with_comparators(schema, label_linf=0.06, pixel_js=0.1)
    balanced = _stats(np.arange(1000) % 10, schema)
    same = comparator_anomalies(tfdv.validate_statistics(balanced, schema, previous_statistics=balanced))
    assert same.drift_skew_info, "the comparators measured"
    assert describe({"train": same}) == []
    no_sevens = _stats(np.where(np.arange(1000) % 10 == 7, 1, np.arange(1000) % 10), schema)
    drifted = comparator_anomalies(tfdv.validate_statistics(no_sevens, schema, previous_statistics=balanced))
    [line] = describe({"train": drifted}, "drift/skew:")
    assert line.startswith("[drift/skew: train] feature 'label': High Linfty distance")
    assert "above the threshold 0.06" in line
