"""VQVAEDegradeLR: degraded LR images from the undertrained VQ-VAE-2 of TrainVQVAE2
(Ito et al., 2025; docs/VQVAE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.image.ingest import read_images
from pipeline.quality import lr_stats
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from tasks.config import gtforge
from tasks.corpus import PhotoStage
from tasks.ingest import IngestHR
from tasks.train_vqvae import TrainVQVAE2

if TYPE_CHECKING:
    import torch

    from models.vqvae2 import VQVAE2


class VQVAEDegradeLR(PhotoStage):
    """Degrade every HR image with the TrainVQVAE2 weights after `epochs` epochs: pass its clean
    LR (PIL bicubic ×`scale`, antialiased; pipeline.train.vqvae.downsample) through the model,
    or with `reconstruct_at` = hr the HR image and downsample the reconstruction; optionally
    correct its low-frequency colour against the clean LR, and write images/<id>.png
    (H // scale, W // scale). stats.json / per_image.csv / stats.png: PSNR, SSIM, CIEDE2000
    ΔE against the clean LR, a colour-shift flag (mean ΔE > shift_threshold), noise and blur
    estimates, and their distribution and spread over the images."""

    version = 2  # 2: reconstructed tile by tile (tile, overlap)
    heavy = True
    global_settings = ("scale",)
    epochs = luigi.OptionalIntParameter(default=None)
    # "lr": the clean LR passes through the model (Ito et al.); "hr": the HR image does, and
    # its reconstruction is downsampled (pipeline.train.vqvae.degraded_lr)
    reconstruct_at = luigi.OptionalChoiceParameter(choices=["lr", "hr"], default=None)
    tile = luigi.OptionalIntParameter(default=None)  # model-input pixels per tile side
    overlap = luigi.OptionalIntParameter(default=None)  # model-input pixels between tiles
    batch = luigi.OptionalIntParameter(default=None, significant=False)  # tiles per pass (speed)
    colour_correction = luigi.OptionalBoolParameter(default=None)
    correction_sigma = luigi.OptionalFloatParameter(default=None)  # LR pixels
    shift_threshold = luigi.OptionalFloatParameter(default=None)  # mean CIEDE2000 ΔE
    example_rows = 4  # images shown in figures/examples.png

    def requires(self):
        train = TrainVQVAE2()
        epochs, max_epochs = self.settings["epochs"], train.settings["max_epochs"]
        if not 1 <= epochs <= max_epochs:
            raise ValueError(f"VQVAEDegradeLR epochs={epochs} is outside 1..{max_epochs}: "
                             f"TrainVQVAE2 trains max_epochs={max_epochs} (raise "
                             f"[{gtforge().preset}.TrainVQVAE2] max_epochs to get more)")
        return {"hr": IngestHR(chunk=self.chunk), "model": train}

    def load_model(self, device: torch.device | str) -> VQVAE2:
        """The TrainVQVAE2 weights after `epochs` epochs, in eval mode on `device`."""
        from models.vqvae2 import VQVAE2
        from pipeline.train import vqvae as vq
        from pipeline.train.loop import load_checkpoint

        ckpt = load_checkpoint(self.input_dir("model") / vq.epoch_file(self.settings["epochs"]))
        model = VQVAE2(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
        return model.to(device).eval()

    def degrade(self, model: VQVAE2, hr: np.ndarray, device: torch.device | str) -> tuple:
        """(clean LR, raw reconstruction, the LR written) of one HR image, uint8 RGB HWC."""
        from pipeline.train import vqvae as vq

        s = self.settings
        clean, raw = vq.degraded_lr(model, hr, s["scale"], s["reconstruct_at"], device, s["tile"],
                                    s["overlap"], self.network_precision, self.resolved("batch"))
        corrected = (vq.colour_correct(raw, clean, s["correction_sigma"])
                     if s["colour_correction"] else raw)
        return clean, raw, corrected

    def stats_row(self, image_id: str, clean: np.ndarray, raw: np.ndarray,
                  degraded: np.ndarray) -> dict:
        """lr_stats.image_stats of the LR written, its colour-shift flag and, with colour
        correction, the mean ΔE before it."""
        s = self.settings
        row = {"id": image_id, **lr_stats.image_stats(clean, degraded, s["correction_sigma"])}
        row["shifted"] = row["delta_e"] > s["shift_threshold"]
        if s["colour_correction"]:
            row["uncorrected_de"] = float(lr_stats.delta_e_map(clean, raw).mean())
        return row

    def build(self, out: Path) -> dict:
        from pipeline.train import vqvae as vq
        from pipeline.train.device import resolve_device

        s = self.settings
        device = resolve_device(gtforge().device)
        model = self.load_model(device)
        (out / "images").mkdir()
        images = read_images(self.input_dir("hr"))
        rows, examples = [], []
        for img in self.progress(images, len(images)):
            hr = read_rgb(image_path(self.input_dir("hr"), img.id))
            clean, raw, degraded = self.degrade(model, hr, device)
            write_rgb(image_path(out, img.id), degraded)
            rows.append(self.stats_row(img.id, clean, raw, degraded))
            if len(examples) < self.example_rows:
                shown = [clean, raw] + ([degraded] if s["colour_correction"] else [])
                examples.append((img.id[:8], shown))
        summary = lr_stats.summarise(rows, s["shift_threshold"])
        lr_stats.save(out, rows, summary)
        (out / "stats.png").write_bytes(lr_stats.stats_png(rows))
        (out / "figures").mkdir()
        columns = ["clean LR", f"VQ-VAE-2 epoch {s['epochs']}"] + \
            (["colour corrected"] if s["colour_correction"] else [])
        (out / "figures" / "examples.png").write_bytes(vq.examples_png(examples, columns))
        return {"images": len(rows), "flagged": summary["flagged"],
                "mean_delta_e": (summary["metrics"]["delta_e"] or {}).get("mean"),
                "diversity": summary["diversity"]}
