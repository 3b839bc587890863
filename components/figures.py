"""Figures inlined in the reviewer's HTML pages (the evaluation report, the data review): matplotlib
headless, each figure as a PNG data URI, so a page reads offline and needs no files beside it."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: no display in pipelines or CI
import matplotlib.pyplot as plt  # noqa: E402


def png_data_uri(fig) -> str:
    """The figure as a PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
