"""A self-contained HTML review of the statistics, the schema anomalies and the drift/skew checks.

The tables are plain HTML built from the protos (readable offline, in any browser, attached to a
ticket). TFDV's own renderings are used where they work outside a notebook: its anomalies and
drift/skew dataframes, and its Facets view (which loads the Facets scripts from the web).
"""

from __future__ import annotations

import html
import time

from tensorflow_data_validation.utils import display_util
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

Stats = statistics_pb2.DatasetFeatureStatisticsList

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}
.bad{color:#b00020;font-weight:bold}.ok{color:#1b7f3b;font-weight:bold}"""


def _feature_rows(dataset: statistics_pb2.DatasetFeatureStatistics) -> list[list[str]]:
    rows = []
    for feature in dataset.features:
        name = ".".join(feature.path.step) or feature.name
        if feature.HasField("num_stats"):
            s = feature.num_stats
            rows.append([name, "numeric", str(s.common_stats.num_non_missing), str(s.common_stats.num_missing),
                         f"{s.mean:.4g}", f"{s.std_dev:.4g}", f"{s.min:.4g}", f"{s.median:.4g}", f"{s.max:.4g}", ""])
        elif feature.HasField("string_stats"):
            s = feature.string_stats
            top = ", ".join(f"{b.label}: {int(b.sample_count)}" for b in
                            sorted(s.rank_histogram.buckets, key=lambda b: b.label))
            rows.append([name, "categorical", str(s.common_stats.num_non_missing),
                         str(s.common_stats.num_missing), "", "", "", "", "", f"{s.unique} values; {top}"])
        elif feature.HasField("bytes_stats"):
            s = feature.bytes_stats
            rows.append([name, "bytes", str(s.common_stats.num_non_missing), str(s.common_stats.num_missing),
                         "", "", "", "", "", f"avg {s.avg_num_bytes:.0f} bytes"])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _statistics_section(title: str, per_split: dict[str, Stats]) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    header = ["feature", "kind", "present", "missing", "mean", "std", "min", "median", "max", "values"]
    for split, stats in per_split.items():
        for dataset in stats.datasets:
            parts.append(f"<h3>{html.escape(split)}: {dataset.num_examples} examples</h3>")
            parts.append(_table(header, _feature_rows(dataset)))
    return "".join(parts)


def _anomalies_section(title: str, per_split: dict[str, anomalies_pb2.Anomalies]) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    for split, anomalies in per_split.items():
        found = len(anomalies.anomaly_info) + anomalies.HasField("dataset_anomaly_info")
        verdict = f'<span class="bad">{found} anomalies</span>' if found else '<span class="ok">no anomaly</span>'
        parts.append(f"<h3>{html.escape(split)}: {verdict}</h3>")
        if anomalies.anomaly_info:
            parts.append(display_util.get_anomalies_dataframe(anomalies).to_html())
        if anomalies.drift_skew_info:
            parts.append(display_util.get_drift_skew_dataframe(anomalies).to_html())
    return "".join(parts)


def render(*, current: dict[str, Stats], baseline: dict[str, Stats] | None, baseline_path: str,
           validator_anomalies: dict[str, anomalies_pb2.Anomalies],
           drift_anomalies: dict[str, anomalies_pb2.Anomalies], thresholds: dict[str, float]) -> str:
    limits = ", ".join(f"{k} &le; {v}" for k, v in thresholds.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data review</title>"
             f"<style>{_STYLE}</style></head><body><h1>Data review</h1>",
             f"<p>Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Baseline: "
             f"<code>{html.escape(baseline_path or 'none')}</code>. Thresholds: {limits}.</p>",
             _anomalies_section("Schema anomalies (ExampleValidator)", validator_anomalies),
             _anomalies_section("Drift against the baseline, and train/test skew (TFDV comparators)",
                                drift_anomalies),
             _statistics_section("Statistics of this run", current)]
    if baseline:
        parts.append(_statistics_section("Baseline statistics", baseline))
    if "train" in current:
        lhs = current["train"]
        rhs = (baseline.get("train") or next(iter(baseline.values()))) if baseline else current.get("test")
        parts.append("<h2>Facets overview (TFDV; loads the Facets scripts from the web)</h2>")
        parts.append(display_util.get_statistics_html(lhs, rhs, "this run: train",
                                                      "baseline: train" if baseline else "this run: test"))
    parts.append("</body></html>")
    return "\n".join(parts)
