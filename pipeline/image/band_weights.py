"""The band weights FuseGT writes: per image, the CFMG's logits and each source's mask value
at every ring centre (band_weights.npz, .json), and a plot of the masks (band_weights.png)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.store import durable

NPZ = "band_weights.npz"
JSON = "band_weights.json"
PNG = "band_weights.png"


def save(folder: Path, ids: Sequence[str], logits: np.ndarray, weights: np.ndarray,
         centres: np.ndarray, sources: Sequence[str], c: float) -> None:
    """band_weights.npz (image_id (N,), logits and weights (N,S,bins), centres (bins,),
    sources (S,)) and band_weights.json (c, centres, and per image the weights by source)."""
    np.savez(Path(folder) / NPZ, image_id=np.array(ids, dtype="<U16"), logits=logits,
             weights=weights, centres=centres, sources=np.array(sources))
    durable.write_json(Path(folder) / JSON, {
        "c": c, "centres": centres.tolist(),
        "images": {i: dict(zip(sources, w.round(5).tolist(), strict=True))
                   for i, w in zip(ids, weights, strict=True)}})


def load(folder: Path) -> dict:
    """band_weights.json of a FuseGT output folder: {"c", "centres", "images"}."""
    return json.loads((Path(folder) / JSON).read_text())


def plot(folder: Path, radius: np.ndarray, profile: np.ndarray, sources: Sequence[str],
         c: float) -> None:
    """band_weights.png: one panel per source, its mask against normalised radial frequency
    `radius` (0 = DC, 1 = Nyquist) from `profile` (N,S,R), a thin line per image and the mean
    in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sources), figsize=(3.0 * len(sources), 2.6), sharey=True)
    for s, ax in enumerate(axes):
        ax.plot(radius, profile[:, s].T, lw=0.6, alpha=0.5)
        ax.plot(radius, profile[:, s].mean(0), lw=2, color="k")
        ax.set_title(sources[s], fontsize=9)
        ax.set_xlabel("radial frequency (1 = Nyquist)", fontsize=8)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("mask weight")
    fig.suptitle(f"FuseGT band weights at c = {c} ({len(profile)} images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(folder) / PNG, dpi=80)
    plt.close(fig)
