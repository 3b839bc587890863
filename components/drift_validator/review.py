"""A self-contained HTML review of the data: a verdict first, pictures of the label distribution
and of the pixel summaries against the baseline (the divergence the drift check measured printed
on each), ImageValidator's image checks (duplicate pairs, mean images: image_review.py), the
schema anomalies and the drift/skew checks, then the statistics as tables.

Everything is inline (figures as PNG data URIs, no script): it reads offline, in any browser,
attached to a ticket. TFDV's own renderings are used where they work outside a notebook: its
anomalies and drift/skew dataframes.
"""

from __future__ import annotations

import html
import time

import matplotlib.pyplot as plt
import numpy as np
from tensorflow_data_validation.utils import display_util
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from components.drift_validator import image_review
from components.figures import png_data_uri

Stats = statistics_pb2.DatasetFeatureStatisticsList
PIXEL_FEATURES = ("pixel_mean", "ink_fraction")
SHORT = {anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity",
         anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon"}

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}
.bad{color:#b00020;font-weight:bold}.ok{color:#1b7f3b;font-weight:bold}img{max-width:100%}
#verdict{padding:.5em 1em;border-radius:4px}#verdict.ok{background:#e6f4ea}#verdict.bad{background:#fde7e9}"""


def _feature(stats: Stats, name: str) -> statistics_pb2.FeatureNameStatistics | None:
    for feature in stats.datasets[0].features if stats.datasets else ():
        if (".".join(feature.path.step) or feature.name) == name:
            return feature
    return None


def _label_shares(stats: Stats) -> dict[str, float]:
    feature = _feature(stats, "label")
    if feature is None or not feature.HasField("string_stats"):
        return {}
    buckets = feature.string_stats.rank_histogram.buckets
    total = sum(b.sample_count for b in buckets) or 1.0
    return {b.label: b.sample_count / total for b in buckets}


def _histogram(stats: Stats, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(bucket edges, share of examples per bucket) of the feature's standard histogram."""
    feature = _feature(stats, name)
    if feature is None or not feature.HasField("num_stats"):
        return None
    for h in feature.num_stats.histograms:
        if h.type == statistics_pb2.Histogram.STANDARD and h.buckets:
            edges = np.array([h.buckets[0].low_value] + [b.high_value for b in h.buckets])
            counts = np.array([b.sample_count for b in h.buckets])
            return edges, counts / max(counts.sum(), 1.0)
    return None


def measured(drift: dict[str, anomalies_pb2.Anomalies], split: str, feature: str) -> str:
    """The divergence the drift (or skew) check measured for a feature, in words; "" if none."""
    anomalies = drift.get(split)
    for info in anomalies.drift_skew_info if anomalies else ():
        if ".".join(info.path.step) == feature:
            return "; ".join(f"{SHORT.get(m.type, 'distance')} {m.value:.4f} (at most {m.threshold:g})"
                             for m in info.drift_measurements)
    return ""


def label_chart(current: dict[str, Stats], baseline: dict[str, Stats] | None,
                drift: dict[str, anomalies_pb2.Anomalies]) -> str | None:
    """Share of each label per split, the baseline's as an outline; the measured distance on each."""
    shares = {split: _label_shares(stats) for split, stats in current.items()}
    labels = sorted({label for s in shares.values() for label in s}, key=lambda v: (len(v), v))
    if not labels:
        return None
    fig, axes = plt.subplots(1, len(shares), figsize=(4.2 * len(shares), 3.0), squeeze=False, sharey=True)
    for ax, (split, share) in zip(axes[0], shares.items(), strict=True):
        x = np.arange(len(labels))
        ax.bar(x, [share.get(label, 0.0) for label in labels], color="C0", label=f"this run: {split}")
        base = baseline and (baseline.get(split) or next(iter(baseline.values())))
        if base:
            base_share = _label_shares(base)
            ax.step(x, [base_share.get(label, 0.0) for label in labels], where="mid", color="black",
                    label="baseline")
        ax.set(xticks=x, xticklabels=labels, xlabel="label", title=f"{split}\n{measured(drift, split, 'label')}")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7, loc="lower center")
    axes[0][0].set_ylabel("share of examples")
    return png_data_uri(fig)


def pixel_charts(current: dict[str, Stats], baseline: dict[str, Stats] | None,
                 drift: dict[str, anomalies_pb2.Anomalies]) -> str | None:
    """Histograms of pixel_mean and ink_fraction per split against the baseline's train split."""
    fig, axes = plt.subplots(1, len(PIXEL_FEATURES), figsize=(6.0 * len(PIXEL_FEATURES), 3.2), squeeze=False)
    drawn = False
    for ax, name in zip(axes[0], PIXEL_FEATURES, strict=True):
        for k, (split, stats) in enumerate(current.items()):
            found = _histogram(stats, name)
            if found:
                edges, share = found
                ax.stairs(share, edges, color=f"C{k}", label=f"this run: {split}")
                drawn = True
        base = baseline and (baseline.get("train") or next(iter(baseline.values())))
        found = _histogram(base, name) if base else None
        if found:
            ax.stairs(found[1], found[0], color="black", ls="--", label="baseline: train")
        title = "\n".join(f"{split}: {m}" for split in ("train", "test") if (m := measured(drift, split, name)))
        ax.set(xlabel=name, ylabel="share of examples", title=title or name)
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    return png_data_uri(fig) if drawn else None



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


def sample_grid(samples: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> str | None:
    """Per split, a row of sample images for each label (the first ones in the files)."""
    if not samples:
        return None
    fig, axes = plt.subplots(1, len(samples), figsize=(3.6 * len(samples), 4.6), squeeze=False)
    for ax, (split, (images, labels)) in zip(axes[0], samples.items(), strict=True):
        rows = sorted(set(labels.tolist()))
        width = max(int((labels == label).sum()) for label in rows)
        side, pad = images.shape[1], 2
        canvas = np.full((len(rows) * (side + pad), width * (side + pad)), 40, dtype=np.uint8)
        for r, label in enumerate(rows):
            for c, image in enumerate(images[labels == label]):
                canvas[r * (side + pad):r * (side + pad) + side, c * (side + pad):c * (side + pad) + side] = image
        ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255)
        ax.set(title=f"{split}", xticks=[], yticks=[(r + 0.5) * (side + pad) for r in range(len(rows))],
               yticklabels=rows)
    return png_data_uri(fig)


def _anomaly_count(anomalies: anomalies_pb2.Anomalies) -> int:
    return len(anomalies.anomaly_info) + anomalies.HasField("dataset_anomaly_info")


def _anomalies_section(title: str, per_split: dict[str, anomalies_pb2.Anomalies]) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    for split, anomalies in per_split.items():
        found = _anomaly_count(anomalies)
        verdict = f'<span class="bad">{found} anomalies</span>' if found else '<span class="ok">no anomaly</span>'
        parts.append(f"<h3>{html.escape(split)}: {verdict}</h3>")
        if anomalies.anomaly_info:
            parts.append(display_util.get_anomalies_dataframe(anomalies).to_html())
        if any(info.drift_measurements for info in anomalies.drift_skew_info):  # no empty tables
            parts.append(display_util.get_drift_skew_dataframe(anomalies).to_html())
    return "".join(parts)


def _verdict(validator_anomalies: dict[str, anomalies_pb2.Anomalies],
             drift_anomalies: dict[str, anomalies_pb2.Anomalies], image_problems: list[str]) -> str:
    found = [(f"{split} ({source})", _anomaly_count(a))
             for source, per_split in (("schema", validator_anomalies), ("drift/skew", drift_anomalies))
             for split, a in per_split.items() if _anomaly_count(a)]
    if image_problems:
        found.append(("images (contamination, image drift)", len(image_problems)))
    if not found:
        return ('<p id="verdict" class="ok"><b>No anomaly</b>: the schema, drift, skew and image checks all '
                'passed.</p>')
    listed = ", ".join(f"{html.escape(where)}: {n}" for where, n in found)
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in image_problems)
    return (f'<p id="verdict" class="bad"><b>Anomalies found</b>, the data gate stops the run: {listed}.</p>'
            + (f'<ul id="image-problems">{lines}</ul>' if lines else ""))


def render(*, current: dict[str, Stats], baseline: dict[str, Stats] | None, baseline_path: str,
           validator_anomalies: dict[str, anomalies_pb2.Anomalies],
           drift_anomalies: dict[str, anomalies_pb2.Anomalies], thresholds: dict[str, float],
           samples: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
           images: tuple[dict, dict[str, np.ndarray]] | None = None) -> str:
    """`images`: ImageValidator's results and pictures (components/image_checks.py), if it ran."""
    limits = ", ".join(f"{k} &le; {v}" for k, v in thresholds.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data review</title>"
             f"<style>{_STYLE}</style></head><body><h1>Data review</h1>",
             _verdict(validator_anomalies, drift_anomalies, list(images[0].get("problems", [])) if images else []),
             f"<p>Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Baseline: "
             f"<code>{html.escape(baseline_path or 'none')}</code>. Thresholds: {limits}.</p>"]
    grid = sample_grid(samples)
    if grid:
        parts.append(f'<h2>Sample images</h2><img id="sample-grid" alt="sample images per label and split" '
                     f'src="{grid}">')
    labels = label_chart(current, baseline, drift_anomalies)
    if labels:
        parts.append(f'<h2>Labels</h2><img id="label-distribution" alt="label distribution per split" src="{labels}">')
    pixels = pixel_charts(current, baseline, drift_anomalies)
    if pixels:
        parts.append(f'<h2>Pixel summaries</h2><img id="pixel-histograms" alt="pixel_mean and ink_fraction '
                     f'histograms" src="{pixels}">')
    if images:
        parts.append(image_review.sections(*images))
    parts += [_anomalies_section("Schema anomalies (ExampleValidator)", validator_anomalies),
              _anomalies_section("Drift against the baseline, and train/test skew (TFDV comparators)",
                                 drift_anomalies),
              _statistics_section("Statistics of this run", current)]
    if baseline:
        parts.append(_statistics_section("Baseline statistics", baseline))
    parts.append("</body></html>")
    return "\n".join(parts)
