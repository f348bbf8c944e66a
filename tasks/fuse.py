"""FuseGT(c): the enhanced GT of every image, fused from the GT and its SR variants by the
trained CFMG at condition c, with the per-image band weights and a plot of them."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import numpy as np
import torch

from pipeline.image.conversions import to_images, to_tensor
from pipeline.image.fusion import fuse_logits, mask_profile, ring_centres
from pipeline.image.ingest import read_images
from pipeline.store import durable
from pipeline.store.imageio import image_path, write_rgb
from pipeline.train import cfmg
from pipeline.train.device import resolve_device
from tasks.base import Stage
from tasks.config import gtforge
from tasks.mask_generator import (
    MODEL_FILE,
    SOURCES,
    TrainMaskGenerator,
    load_cfmg,
    read_sources,
    source_stages,
)

BAND_WEIGHTS_NPZ = "band_weights.npz"
BAND_WEIGHTS_JSON = "band_weights.json"
BAND_WEIGHTS_PNG = "band_weights.png"


class FuseGT(Stage):
    """images/<id>.png (uint8 RGB, GT size); band_weights.npz (image_id (N,), logits and
    weights (N,S,bins): the weights are each source's mask value at each ring centre, so they
    sum to 1 over sources; centres (bins,); sources (S,)), band_weights.json (the same per
    image, by source name) and band_weights.png (mask of each source against frequency)."""

    version = 2
    heavy = True
    c = luigi.OptionalFloatParameter(default=None)

    def requires(self):
        return {**source_stages(), "cfmg": TrainMaskGenerator()}

    def build(self, out: Path) -> dict:
        c = self.settings["c"]
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"FuseGT: c must be in [0,1], got {c}")
        device = resolve_device(gtforge().device)
        model = load_cfmg(self.input_dir("cfmg") / MODEL_FILE, device)
        centres = ring_centres(model.bins).float()
        (out / "images").mkdir()
        images = read_images(self.input_dir("gt"))
        ids, logits, weights = [], [], []
        for img in self.progress(images, len(images), f"FuseGT c={c}"):
            sources = torch.stack([to_tensor(x, device)[0] for x in read_sources(self, img.id)])
            with torch.no_grad():
                lg = cfmg.predict_logits(model, sources[None, 0], c)
                fused = fuse_logits(sources[None], lg)
            write_rgb(image_path(out, img.id), to_images(fused[0]))
            ids.append(img.id)
            logits.append(lg[0].cpu().numpy())
            weights.append(mask_profile(lg, centres)[0].cpu().numpy())
        logits_a, weights_a = np.stack(logits), np.stack(weights)
        np.savez(out / BAND_WEIGHTS_NPZ, image_id=np.array(ids, dtype="<U16"),
                 logits=logits_a, weights=weights_a, centres=centres.numpy(),
                 sources=np.array(SOURCES))
        durable.write_json(out / BAND_WEIGHTS_JSON, {
            "c": c, "centres": centres.tolist(),
            "images": {i: dict(zip(SOURCES, w.round(5).tolist(), strict=True))
                       for i, w in zip(ids, weights_a, strict=True)}})
        plot_band_weights(torch.from_numpy(logits_a), out / BAND_WEIGHTS_PNG, c)
        return {"images": len(ids), "c": c,
                "mean_weights": dict(zip(SOURCES, weights_a.mean((0, 2)).round(4).tolist(),
                                         strict=True))}


def plot_band_weights(logits: torch.Tensor, png: Path, c: float, points: int = 200) -> None:
    """One panel per source: its mask against normalised radial frequency (0 = DC, 1 =
    Nyquist), a thin line per image and the mean in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radius = torch.linspace(0, 2 ** 0.5, points)
    profile = mask_profile(logits, radius).numpy()  # (N,S,R)
    fig, axes = plt.subplots(1, len(SOURCES), figsize=(3.0 * len(SOURCES), 2.6), sharey=True)
    for s, ax in enumerate(axes):
        ax.plot(radius, profile[:, s].T, lw=0.6, alpha=0.5)
        ax.plot(radius, profile[:, s].mean(0), lw=2, color="k")
        ax.set_title(SOURCES[s], fontsize=9)
        ax.set_xlabel("radial frequency (1 = Nyquist)", fontsize=8)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("mask weight")
    fig.suptitle(f"FuseGT band weights at c = {c} ({len(profile)} images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def read_band_weights(stage_dir: Path) -> dict:
    """band_weights.json of a FuseGT output folder."""
    return json.loads((Path(stage_dir) / BAND_WEIGHTS_JSON).read_text())
