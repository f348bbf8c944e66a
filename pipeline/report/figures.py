"""The report's figure sections, from the upstream stage folders: training curves, scores and
labels, colour shift, and the pictures stages drew themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.image.plots import histograms_png, labels_png
from pipeline.quality import lr_stats
from pipeline.quality.scores import ScoreTable
from pipeline.report.gather import Done, files_named
from pipeline.report.html import Figure
from pipeline.train.curve import CURVE_CSV, plot_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def score_figures(scored: list[tuple[Done, ScoreTable]]) -> list[Figure]:
    """Per stage with a score table (gather.score_tables): per metric, histograms of the
    original's and each candidate's scores over the kept patches; and the Positive / Similar
    / Negative counts per candidate."""
    figs = []
    for d, table in scored:
        scores, labels = table.scores[table.keep], table.labels[table.keep]
        names = ["original", *table.candidate_names]
        panels = {m: {n: scores[:, k, j] for k, n in enumerate(names)}
                  for j, m in enumerate(table.metric_names)}
        figs.append(Figure(f"{d.name}: scores per metric", histograms_png(panels, "score"),
                           f"{int(table.keep.sum())} kept patches of {len(table.keep)}"))
        if table.candidate_names:
            figs.append(Figure(f"{d.name}: labels", labels_png(labels, table.candidate_names),
                               "majority vote of the metrics"))
    return figs


def curve_figures(upstream: list[Done], tmp: Path) -> list[Figure]:
    """Every training curve (curve.csv): the stage's own curve.png beside it, or drawn into
    `tmp` with pipeline.train.curve.plot_curve."""
    figs = []
    for n, (d, path) in enumerate(files_named(upstream, CURVE_CSV)):
        png = path.with_suffix(".png")
        if not (png.is_file() and png.read_bytes().startswith(PNG_SIGNATURE)):
            png = tmp / f"curve{n}.png"
            plot_curve(path, png, d.name)
        steps = sum(1 for _ in open(path)) - 1
        figs.append(Figure(d.name, png.read_bytes(), f"{steps} steps"))
    return figs


def delta_e_figures(upstream: list[Done]) -> list[Figure]:
    """A ΔE histogram per stage that wrote LR statistics (pipeline.quality.lr_stats), its
    chunks together."""
    found: dict[str, list[np.ndarray]] = {}
    for d in upstream:
        stats = lr_stats.load(d.folder)
        if stats is not None:
            found.setdefault(d.name, []).append(lr_stats.delta_e_values(stats))
    figs = []
    for name, parts in found.items():
        values = np.concatenate(parts)
        if not values.size:
            continue
        figs.append(Figure(f"{name}: ΔE per image",
                           histograms_png({"CIEDE2000": {"ΔE": values}}, "ΔE"),
                           f"{len(values)} values in {lr_stats.STATS_JSON}"
                           + (f" of {len(parts)} chunks" if len(parts) > 1 else "")
                           + f", mean {values.mean():.2f}, max {values.max():.2f}"))
    return figs


def stage_figures(upstream: list[Done]) -> dict[str, list[Figure]]:
    """The pictures stages drew (PNG files at the top of their folder or in figures/), by
    stage; training curves are shown with the other curves. Of a stage run per chunk, the
    first chunk's pictures."""
    out: dict[str, list[Figure]] = {}
    for d in upstream:
        if d.name in out:  # another chunk of a stage already shown
            continue
        seen: set[bytes] = set()  # the same picture saved twice is shown once
        for path in d.files:
            if path.suffix != ".png" or path.parent not in (d.folder, d.folder / "figures"):
                continue
            if path.with_suffix(".csv").name == CURVE_CSV and path.with_suffix(".csv").is_file():
                continue
            data = path.read_bytes()
            if data.startswith(PNG_SIGNATURE) and data not in seen:
                seen.add(data)
                out.setdefault(d.name, []).append(Figure(path.stem, data))
    return out


