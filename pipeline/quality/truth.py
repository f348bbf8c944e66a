"""Measuring a build against a known truth: clean reference photos that the build never saw.

Given, for some source photos, a clean reference of the same size (the photo the imperfect GT
was made from), every candidate of every patch is compared with the original GT by its
distance to the reference: PSNR (dB), SSIM and a perceptual-leaning measure, the PSNR of the
gradient magnitude (edges, dB). The *oracle* label is Positive when the candidate is at least
`tau` dB PSNR closer to the reference than the original, Negative when at least `tau` dB
further, else Similar; confusion matrices compare the build's labels with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage import metrics  # loads its submodules (and scipy.ndimage) on first use

from pipeline.quality.judge import closeness
from pipeline.store.imageio import read_rgb

ORACLE_TAU_DB = 0.2
MEASURES = ("psnr", "ssim", "edges")


def reference_index(folder: Path) -> dict[str, Path]:
    """Clean references by file stem (a reference matches a source photo of the same stem,
    whatever the extensions): {stem: path}."""
    return {p.stem: p for p in sorted(Path(folder).iterdir()) if p.is_file()}


def reference_for(source: str, references: Mapping[str, Path]) -> Path | None:
    """The clean reference of a source photo path (None when there is none)."""
    return references.get(Path(os.fsdecode(os.fsencode(source))).stem)


def distances(x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM (0-1, colour) and edge PSNR (dB) of uint8 RGB `x` against `ref`."""
    psnr, _, edges = closeness(x, ref)
    ssim = metrics.structural_similarity(x, ref, channel_axis=2, data_range=255)
    return {"psnr": float(psnr), "ssim": float(ssim), "edges": float(edges)}


def oracle(gain_db: np.ndarray, tau: float = ORACLE_TAU_DB) -> np.ndarray:
    """Oracle labels int8 from PSNR gains (dB): +1 >= tau, -1 <= -tau, else 0."""
    gain_db = np.asarray(gain_db)
    return np.where(gain_db >= tau, 1, np.where(gain_db <= -tau, -1, 0)).astype(np.int8)


def confusion(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """3x3 counts: rows the oracle (Negative, Similar, Positive), columns the labels."""
    m = np.zeros((3, 3), np.int64)
    np.add.at(m, (np.asarray(truth, np.int64) + 1, np.asarray(labels, np.int64) + 1), 1)
    return m


def rates(m: np.ndarray) -> dict[str, float | None]:
    """Precision and recall of Positive and Negative from a confusion matrix (None: 0/0)."""
    def ratio(a: float, b: float) -> float | None:
        return round(float(a) / float(b), 4) if b else None

    return {"positive_precision": ratio(m[2, 2], m[:, 2].sum()),
            "positive_recall": ratio(m[2, 2], m[2].sum()),
            "negative_precision": ratio(m[0, 0], m[:, 0].sum()),
            "negative_recall": ratio(m[0, 0], m[0].sum())}


@dataclass
class CandidateTruth:
    """One candidate over the measured patches: gains (dB or SSIM points) against the
    original per measure, oracle labels, the build's labels, and mean |candidate - GT|."""

    name: str
    gains: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEASURES})
    oracle: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mad: list[float] = field(default_factory=list)

    def add(self, original: np.ndarray, candidate: np.ndarray, reference: np.ndarray,
            label: int) -> None:
        before, after = distances(original, reference), distances(candidate, reference)
        for m in MEASURES:
            self.gains[m].append(after[m] - before[m])
        self.oracle.append(int(oracle(after["psnr"] - before["psnr"])))
        self.labels.append(int(label))
        self.mad.append(float(np.abs(candidate.astype(np.int16) - original).mean()))

    def summary(self) -> dict:
        m = confusion(np.array(self.labels), np.array(self.oracle))
        gains = {k: {"mean": round(float(np.mean(v)), 4), "median": round(float(np.median(v)), 4),
                     "closer": int(np.sum(np.array(v) > 0))} for k, v in self.gains.items()}
        return {"patches": len(self.labels), "gain": gains, "mad": round(float(np.mean(self.mad)),
                                                                          3),
                "confusion": m.tolist(), **rates(m)}


def referenced_samples(shards, references: Mapping[str, Path], keep: Container[str] | None = None
                       ) -> Iterator[tuple[object, int, np.ndarray]]:
    """(shard, sample index in it, clean crop uint8 at the sample's GT position) for every
    sample of a ShardSet whose source photo has a reference and, when `keep` is given, whose
    source path is in it. Each reference is read once."""
    side = int(shards.manifest["patch_size"])
    cache: dict[str, np.ndarray | None] = {}
    for s in range(len(shards.files)):
        shard = shards.shard(s)
        for n, meta in enumerate(shard.meta):
            source = shards.source(s, int(meta["source_index"]))
            if keep is not None and source not in keep:
                continue
            if source not in cache:
                path = reference_for(source, references)
                cache[source] = read_rgb(path) if path is not None else None
            if cache[source] is None:
                continue
            x, y = int(meta["x"]), int(meta["y"])
            yield shard, n, cache[source][y:y + side, x:x + side]


def measure_shards(shards, references: Mapping[str, Path],
                   keep_patch: Callable[[np.ndarray], bool] | None = None
                   ) -> dict[str, CandidateTruth]:
    """Every candidate of every sample of a ShardSet whose source photo has a reference and,
    when `keep_patch` is given, whose original GT patch (uint8 HxWx3) it accepts:
    {candidate name: CandidateTruth}."""
    names = shards.candidate_names
    found = {n: CandidateTruth(n) for n in names}
    for shard, n, reference in referenced_samples(shards, references):
        original = shard.image("gt_original", n)
        if keep_patch is not None and not keep_patch(original):
            continue
        for k, name in enumerate(names):
            found[name].add(original, shard.image("gt_candidates", n, k), reference,
                            int(shard.labels[n, k]))
    return found


def overall(found: Mapping[str, CandidateTruth]) -> dict:
    """The confusion matrix and rates over every candidate together."""
    m = sum((confusion(np.array(t.labels), np.array(t.oracle)) for t in found.values()),
            np.zeros((3, 3), np.int64))
    return {"confusion": m.tolist(), **rates(m)}
