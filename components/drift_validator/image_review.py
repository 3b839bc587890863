"""The data review's image sections, from ImageValidator's results (components/image_checks.py):
the contamination checks (counts, what could not run and why, a few duplicate pairs as images)
and the image drift (each measure against its threshold, the mean images and their difference
from the baseline's as a picture)."""

from __future__ import annotations

import html
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from components.figures import png_data_uri

Results = dict[str, Any]
Pictures = dict[str, np.ndarray]


def _cell(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _verdict_span(bad: bool, text: str) -> str:
    return f'<span class="{"bad" if bad else "ok"}">{html.escape(text)}</span>'


def contamination_table(results: Results) -> str:
    section = results["contamination"]
    limit = section["max_share"]
    head = "".join(f"<th>{h}</th>" for h in ("test images against", "test images", "reference images",
                                              "duplicates (exact + near)", "share", "verdict"))
    rows = []
    for check in section["checks"]:
        if not check["ran"]:
            rows.append("<tr>" + _cell(check["against"]) + '<td colspan="4">could not run: '
                        f'{html.escape(check["why_not"])}</td><td>not checked</td></tr>')
            continue
        over = check["share"] > limit
        verdict = _verdict_span(over, ("above" if over else "within") + f" the limit {limit:.2%}")
        rows.append("<tr>" + _cell(check["against"]) + _cell(check["test_images"]) + _cell(check["reference_images"])
                    + _cell(f"{check['contaminated']} ({check['exact']} + {check['near']})")
                    + _cell(f"{check['share']:.2%}")
                    + f"<td>{verdict}</td></tr>")
    return (f'<table id="contamination"><tr>{head}</tr>{"".join(rows)}</table>'
            f'<p>Near duplicates: perceptual hashes at most {section["hamming"]} bit(s) apart (the test image also '
            f'moved by one pixel each way), confirmed when the 14x14 thumbnails\' cosine similarity is at least '
            f'{section["similarity"]:g}.</p>')


def pair_figure(check: dict, pictures: Pictures) -> str | None:
    """A check's sample pairs: each test image above the image it duplicates (as the 14x14
    thumbnail the check compared it with)."""
    pairs = check.get("pairs", [])
    if not pairs or f"{check['name']}.test" not in pictures:
        return None
    fig, axes = plt.subplots(2, len(pairs), figsize=(1.5 * len(pairs) + 0.4, 3.6), squeeze=False)
    where = "champion's training image" if check["name"] == "champion" else None
    for i, pair in enumerate(pairs):
        top, bottom = axes[0][i], axes[1][i]
        top.imshow(pictures[f"{check['name']}.test"][i], cmap="gray_r", vmin=0, vmax=255)
        bottom.imshow(pictures[f"{check['name']}.reference"][i], cmap="gray_r", vmin=0, vmax=255)
        top.set_title(f"test #{pair['test_id']}\nlabel {pair['test_label']}", fontsize=7)
        how = "exact copy" if pair["exact"] else f"cosine {pair['similarity']:.4f}\nmoved {tuple(pair['shift'])}"
        bottom.set_title(f"{where or pair['source']} #{pair['ref_id']}, label {pair['ref_label']}\n{how}\n"
                         "(its 14x14 thumbnail)", fontsize=6 if where else 7)
        for ax in (top, bottom):
            ax.set(xticks=[], yticks=[])
    return png_data_uri(fig)


def drift_table(results: Results) -> str:
    section = results["drift"]
    if not section["ran"]:
        return f'<p class="bad">Image drift check did not run: {html.escape(section["why_not"])}</p>' \
            if section["baseline"] else f'<p>Image drift check off: {html.escape(section["why_not"])}</p>'
    head = "".join(f"<th>{h}</th>" for h in ("split", "measure", "comparator", "value", "threshold", "verdict"))
    rows = []
    for m in section["measures"]:
        value = "-" if m["value"] is None else f"{m['value']:.4f}"
        threshold = "-" if m["threshold"] is None else f"{m['threshold']:g}"
        rows.append("<tr>" + _cell(m["split"]) + _cell(m["measure"]) + _cell(m["kind"]) + _cell(value)
                    + _cell(threshold) + f"<td>{_verdict_span(m['over'], 'drift' if m['over'] else 'ok')}</td></tr>")
    return (f"<p>Against {html.escape(section['baseline_source'])}: <code>{html.escape(section['baseline'])}</code>."
            f"</p><table id=\"image-drift\"><tr>{head}</tr>{''.join(rows)}</table>")


def mean_image_figure(results: Results, pictures: Pictures) -> str | None:
    """The baseline's mean image, each compared split's, and each one's difference from the baseline's."""
    splits = [s for s in ("train", "test") if f"mean.{s}" in pictures]
    if not splits:
        return None
    baseline = pictures.get("mean.baseline")
    excess = {m["split"]: m for m in results["drift"]["measures"] if m["feature"] == "mean_image"}
    columns = 1 + 2 * len(splits) if baseline is not None else len(splits)
    fig, axes = plt.subplots(1, columns, figsize=(2.4 * columns, 2.8), squeeze=False)
    panels = list(axes[0])
    if baseline is not None:
        ax = panels.pop(0)
        ax.imshow(baseline, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title("baseline: mean image", fontsize=8)
    limit = max((float(np.abs(pictures[f"mean.{s}"] - baseline).max()) for s in splits), default=1.0) \
        if baseline is not None else 1.0
    for split in splits:
        ax = panels.pop(0)
        ax.imshow(pictures[f"mean.{split}"], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{split}: mean image", fontsize=8)
        if baseline is not None:
            ax = panels.pop(0)
            shown = ax.imshow(pictures[f"mean.{split}"] - baseline, cmap="RdBu_r", vmin=-limit, vmax=limit)
            m = excess.get(split)
            note = f"\nexcess {m['value']:.3f} (at most {m['threshold']:g})" if m else ""
            ax.set_title(f"{split} - baseline{note}", fontsize=8)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes[0]:
        ax.set(xticks=[], yticks=[])
    return png_data_uri(fig)


def _count(n: int) -> str:
    """The anomaly count as the review's other sections show it."""
    return f'<span class="bad">{n} anomalies</span>' if n else '<span class="ok">no anomaly</span>'


def sections(results: Results, pictures: Pictures) -> str:
    section = results["contamination"]
    over = sum(1 for c in section["checks"] if c["ran"] and c["share"] > section["max_share"])
    parts = [f"<h2>Images: copies of training images in the test split (ImageValidator): {_count(over)}</h2>",
             contamination_table(results)]
    for check in section["checks"]:
        pairs = pair_figure(check, pictures)
        if pairs:
            parts.append(f'<h3>Sample pairs: test images and their copies in {html.escape(check["against"])}</h3>'
                         f'<img id="duplicate-pairs-{check["name"]}" alt="test images and the images they copy" '
                         f'src="{pairs}">')
    drifted = sum(1 for m in results["drift"]["measures"] if m["over"])
    if results["drift"]["baseline"] and not results["drift"]["ran"]:
        drifted += 1  # could not run: fails closed
    parts += [f"<h2>Images: drift of the digits' position, size and shape (ImageValidator): {_count(drifted)}</h2>",
              drift_table(results)]
    means = mean_image_figure(results, pictures)
    if means:
        parts.append(f'<img id="mean-images" alt="mean images and their difference from the baseline" src="{means}">')
    return "".join(parts)
