"""The report's pictures as PNG bytes: histograms, label bars, sample tiles, and the
matplotlib figure every stage's plot is drawn on."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

LABEL_NAMES = {1: "Positive", 0: "Similar", -1: "Negative"}
LABEL_COLOURS = {1: "#1a7f37", 0: "#6e7781", -1: "#cf222e"}


def display_tile(rgb: np.ndarray, side: int, scale: int = 1) -> np.ndarray:
    """What a sample tile shows: an LR image (`scale` > 1) enlarged by pixel repetition to the
    HR size, then the centre `side` x `side` crop when the image is larger (native pixels, so
    detail stays judgeable). uint8 RGB HWC in and out."""
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    h, w = rgb.shape[:2]
    y, x = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return np.ascontiguousarray(rgb[y:y + side, x:x + side])


def figure(width: float, height: float):
    """A matplotlib Figure of `width` x `height` inches at 80 dpi, not tied to pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=80)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    """The figure, laid out tightly, as PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def histograms_png(panels: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str = "",
                   bins: int = 30) -> bytes:
    """One panel per entry of `panels` ({panel title: {series name: values}}), the series of a
    panel as overlaid step histograms over common bins. Returns PNG bytes."""
    fig = figure(3.4 * max(len(panels), 1), 2.8)
    for i, (title, series) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, max(len(panels), 1), i)
        values = [np.asarray(v, np.float64) for v in series.values()]
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
        edges = np.histogram_bin_edges(finite if finite.size else [0.0, 1.0], bins=bins)
        for name, v in zip(series, values, strict=True):
            ax.hist(v[np.isfinite(v)], bins=edges, histtype="step", lw=1.4, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if len(series) > 1:
            ax.legend(fontsize=7)
    return figure_png(fig)


def labels_png(labels: np.ndarray, candidate_names: Sequence[str]) -> bytes:
    """Stacked bars: per candidate, how many patches are Positive / Similar / Negative.
    `labels` int (N, K) of +1/0/-1. Returns PNG bytes."""
    fig = figure(1.2 + 0.9 * max(len(candidate_names), 1), 2.8)
    ax = fig.add_subplot(1, 1, 1)
    bottom = np.zeros(len(candidate_names))
    for value in (1, 0, -1):
        counts = (np.asarray(labels) == value).sum(axis=0) if len(labels) else bottom * 0
        ax.bar(list(candidate_names), counts, bottom=bottom, color=LABEL_COLOURS[value],
               label=LABEL_NAMES[value])
        bottom = bottom + counts
    ax.set_ylabel("patches", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return figure_png(fig)
