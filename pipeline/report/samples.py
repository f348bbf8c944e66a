"""The report's sample rows: patches spread evenly over a shard set, each shown as its LR
inputs, the original and every candidate with its label and scores."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from pipeline.image.plots import display_tile
from pipeline.report.html import SampleRow, Tile
from pipeline.shards.spec import texts


def sample_rows(shards: list[Path], sizes: list[int], count: int,
                side: int) -> list[SampleRow]:
    """`count` samples spread evenly over the shard files (format v1; `sizes`: samples in
    each), as rows of tiles of at most `side` pixels."""
    if not shards or count <= 0:
        return []
    starts = np.cumsum([0, *sizes])
    picks = sorted({int(i) for i in np.linspace(0, starts[-1] - 1, count)}) if starts[-1] else []
    rows = []
    for n in picks:
        s = int(np.searchsorted(starts, n, side="right") - 1)
        path, i = shards[s], n - int(starts[s])
        with h5py.File(path, "r") as f:
            rows.append(sample_row(f, i, side, f"{path.name} #{i}"))
    return rows


def sample_row(f: h5py.File, i: int, side: int, where: str) -> SampleRow:
    """Sample `i` of an open shard: LR tiles (enlarged), the original, the candidates."""
    original = f["gt_original"][i]
    tiles = _lr_tiles(f, i, side, original.shape[0])
    metrics = texts(f["scores"].attrs.get("metric_names", [])) if "scores" in f else []
    scores = f["scores"][i] if "scores" in f else None

    def note(k: int) -> str:
        if scores is None:
            return ""
        return " ".join(f"{m} {scores[k, j]:.3g}" for j, m in enumerate(metrics)
                        if np.isfinite(scores[k, j]))  # NaN: not judged by that annotator

    tiles.append(Tile("original", display_tile(original, side), note=note(0)))
    if "gt_candidates" in f:
        names = texts(f["gt_candidates"].attrs.get("candidate_names", []))
        labels = f["labels"][i] if "labels" in f else [None] * len(names)
        for k, name in enumerate(names):
            label = None if labels[k] is None else int(labels[k])
            tiles.append(Tile(name, display_tile(f["gt_candidates"][i, k], side), label=label,
                              note=note(k + 1)))
    return SampleRow(_title(f, i, where), tiles)


def _lr_tiles(f: h5py.File, i: int, side: int, hr_side: int) -> list[Tile]:
    tiles = []
    for name, title in (("lq", "LR"), ("lq_vqvae", "LR VQ-VAE")):
        if name in f:
            lr = f[name][i]
            factor = hr_side // lr.shape[0]
            tiles.append(Tile(f"{title} ×{factor}", display_tile(lr, side, factor)))
    return tiles


def _title(f: h5py.File, i: int, where: str) -> str:
    """The sample's image id, position and source file name, with where it was read."""
    if "meta" not in f:
        return where
    meta = {k: f["meta"][i][k] for k in f["meta"].dtype.names}
    fields = {k: v.decode() if isinstance(v, bytes) else v for k, v in meta.items()}
    if "sources" in f and "source_index" in fields:  # the photo's file name
        source = f["sources"][int(fields.pop("source_index"))]
        fields["source"] = os.path.basename(source.decode("utf-8", "backslashreplace")
                                            if isinstance(source, bytes) else str(source))
    scale = int(f.attrs.get("scale", 1))
    return ", ".join(f"{k} {v}" for k, v in fields.items()) + f" ({where}, scale {scale})"
