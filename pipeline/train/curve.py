"""The loss curve every training writes: curve.csv (one row per step: step and each loss) and
its plot."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.image.plots import figure, figure_png

CURVE_CSV = "curve.csv"


def read_curve(csv_path: Path) -> list[dict[str, float]]:
    """The rows of a curve CSV as floats; [] when the file does not exist."""
    if not Path(csv_path).is_file():
        return []
    with open(csv_path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Draw every loss column of a curve CSV against the step, one panel per loss."""
    rows = read_curve(csv_path)
    names = [k for k in (rows[0] if rows else {}) if k != "step"]
    fig = figure(3.2 * max(len(names), 1), 2.6)
    steps = [r["step"] for r in rows]
    for i, name in enumerate(names, start=1):
        ax = fig.add_subplot(1, len(names), i)
        ax.plot(steps, [r[name] for r in rows], lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(title, fontsize=10)
    Path(png_path).write_bytes(figure_png(fig))
