"""FuseGT(c): the enhanced GT of every image, fused from the GT and its SR variants by the
trained CFMG at condition c, with the per-image band weights and a plot of them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.image import band_weights
from pipeline.image.ingest import read_images
from pipeline.store.imageio import image_path, write_rgb
from tasks.config import gtforge
from tasks.corpus import PhotoStage
from tasks.mask_generator import (
    MODEL_FILE,
    SOURCES,
    TrainMaskGenerator,
    load_cfmg,
    read_sources,
    source_stages,
)

if TYPE_CHECKING:
    import torch

    from models.cfmg import CFMG

PROFILE_POINTS = 200  # radii at which band_weights.png draws each mask


class FuseGT(PhotoStage):
    """images/<id>.png (uint8 RGB, GT size); band_weights.npz (image_id (N,), logits and
    weights (N,S,bins): the weights are each source's mask value at each ring centre, so they
    sum to 1 over sources; centres (bins,); sources (S,)), band_weights.json (the same per
    image, by source name) and band_weights.png (mask of each source against frequency)."""

    version = 3  # 3: masks from views of the training crop size; fusion per channel, uint8
    heavy = True
    c = luigi.OptionalFloatParameter(default=None)
    views = luigi.OptionalIntParameter(default=None)  # per side: views x views CFMG windows

    def requires(self):
        return {**source_stages(self.chunk), "cfmg": TrainMaskGenerator()}

    def fuse(self, model: CFMG, image_id: str, centres: torch.Tensor,
             device: torch.device | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fused uint8 RGB HWC, logits (S,bins), weights at the ring centres (S,bins)) of one
        image at this stage's c: the CFMG sees `views` x `views` windows of its training crop
        (pipeline.train.cfmg.predict_photo), the FFT fusion runs on the whole photo one colour
        channel at a time (pipeline.image.fusion.fuse_photo)."""
        from pipeline.image.fusion import fuse_photo, mask_profile
        from pipeline.train import cfmg

        sources = read_sources(self, image_id)
        crop = self.input_stages()["cfmg"].settings["crop"]
        logits = cfmg.predict_photo(model, sources[0], self.settings["c"], crop,
                                    self.settings["views"], device, self.network_precision).cpu()
        fused = fuse_photo(sources, logits)
        return fused, logits[0].numpy(), mask_profile(logits, centres)[0].numpy()

    def build(self, out: Path) -> dict:
        import torch

        from pipeline.image.fusion import mask_profile, ring_centres
        from pipeline.train.device import resolve_device

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
            fused, image_logits, image_weights = self.fuse(model, img.id, centres, device)
            write_rgb(image_path(out, img.id), fused)
            ids.append(img.id)
            logits.append(image_logits)
            weights.append(image_weights)
        if not ids:  # a chunk whose photos were all unusable
            return {"images": 0, "c": c}
        logits_a, weights_a = np.stack(logits), np.stack(weights)
        band_weights.save(out, ids, logits_a, weights_a, centres.numpy(), SOURCES, c)
        radius = torch.linspace(0, 2 ** 0.5, PROFILE_POINTS)
        profile = mask_profile(torch.from_numpy(logits_a), radius).numpy()
        band_weights.plot(out, radius.numpy(), profile, SOURCES, c)
        return {"images": len(ids), "c": c,
                "mean_weights": dict(zip(SOURCES, weights_a.mean((0, 2)).round(4).tolist(),
                                         strict=True))}
