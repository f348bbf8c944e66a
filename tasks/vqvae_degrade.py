"""VQVAEDegradeLR: degraded LR images from the undertrained VQ-VAE-2 of TrainVQVAE2
(Ito et al., 2025; docs/VQVAE.md)."""

from __future__ import annotations

from pathlib import Path

import luigi
import torch

from models.vqvae2 import VQVAE2
from pipeline.image.ingest import read_images
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from pipeline.train import vqvae as vq
from pipeline.train.device import resolve_device
from pipeline.train.loop import (
    load_checkpoint,
)
from tasks.base import Stage
from tasks.config import gtforge
from tasks.ingest import IngestHR
from tasks.train_vqvae import TrainVQVAE2


class VQVAEDegradeLR(Stage):
    """Downsample every HR image `scale` times (PIL bicubic, antialiased; pipeline.train.vqvae.
    downsample), pass it through the TrainVQVAE2 weights after `epochs` epochs, optionally
    correct its low-frequency colour against the clean LR, and write images/<id>.png
    (H // scale, W // scale). stats.json / per_image.csv / stats.png: PSNR, SSIM, CIEDE2000
    ΔE against the clean LR, a colour-shift flag (mean ΔE > shift_threshold), noise and blur
    estimates, and their distribution and spread over the images."""

    version = 1
    heavy = True
    global_settings = ("scale",)
    epochs = luigi.OptionalIntParameter(default=None)
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
        return {"hr": IngestHR(), "model": train}

    def load_model(self, device: torch.device) -> VQVAE2:
        ckpt = load_checkpoint(self.input_dir("model") / vq.epoch_file(self.settings["epochs"]))
        model = VQVAE2(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
        return model.to(device).eval()

    def build(self, out: Path) -> dict:
        s, scale = self.settings, self.settings["scale"]
        device = resolve_device(gtforge().device)
        model = self.load_model(device)
        (out / "images").mkdir()
        images = read_images(self.input_dir("hr"))
        rows, examples = [], []
        for img in self.progress(images, len(images)):
            clean = vq.downsample(read_rgb(image_path(self.input_dir("hr"), img.id)), scale)
            raw = vq.reconstruct(model, clean, device)
            degraded = (vq.colour_correct(raw, clean, s["correction_sigma"])
                        if s["colour_correction"] else raw)
            write_rgb(image_path(out, img.id), degraded)
            row = {"id": img.id, **vq.image_stats(clean, degraded, s["correction_sigma"])}
            row["shifted"] = row["delta_e"] > s["shift_threshold"]
            if s["colour_correction"]:
                row["uncorrected_de"] = float(vq.delta_e_map(clean, raw).mean())
            rows.append(row)
            if len(examples) < self.example_rows:
                shown = [clean, raw] + ([degraded] if s["colour_correction"] else [])
                examples.append((img.id[:8], shown))
        summary = vq.summarise(rows, s["shift_threshold"])
        durable.write_json(out / "stats.json", {
            "summary": summary, "per_image": {r["id"]: {k: v for k, v in r.items() if k != "id"}
                                              for r in rows}})
        durable.write_csv(out / "per_image.csv", rows, ["id", *vq.STAT_NAMES, "shifted"])
        (out / "stats.png").write_bytes(vq.stats_png(rows))
        (out / "figures").mkdir()
        columns = ["clean LR", f"VQ-VAE-2 epoch {s['epochs']}"] + \
            (["colour corrected"] if s["colour_correction"] else [])
        (out / "figures" / "examples.png").write_bytes(vq.examples_png(examples, columns))
        return {"images": len(rows), "flagged": summary["flagged"],
                "mean_delta_e": (summary["metrics"]["delta_e"] or {}).get("mean"),
                "diversity": summary["diversity"]}
