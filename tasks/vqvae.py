"""TrainVQVAE2 / VQVAEDegradeLR: degraded LR images from an undertrained VQ-VAE-2
(Ito et al., 2025; docs/VQVAE.md).

TrainVQVAE2 trains max_epochs epochs once and keeps the weights after every epoch
(epoch-XX.pt); VQVAEDegradeLR(epochs) picks the checkpoint it wants, so asking for another
epoch count reuses the same training.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import luigi
import torch

from models.vqvae2 import VQVAE2
from pipeline import durable
from pipeline import vqvae as vq
from pipeline.cfmg_train import sample_crops
from pipeline.device import resolve_device
from pipeline.imageio import image_path, read_rgb, write_rgb
from pipeline.ingest import Rejected, decode_hr, folder_fingerprint, read_images, walk_inputs
from pipeline.seeding import derive_seed, rng
from pipeline.training import (
    TrainState,
    finish_training,
    load_checkpoint,
    save_checkpoint,
    train_loop,
)
from tasks.base import Stage
from tasks.config import gtforge
from tasks.ingest import IngestHR


def _decoded_rgb(path: Path, min_side: int, max_pixels: int):
    return decode_hr(path, min_side, max_pixels).rgb


class TrainVQVAE2(Stage):
    """Train a two-level VQ-VAE-2 (loss = MSE + beta * commitment, EMA codebooks, Adam) on
    random crops with random flips of the HR corpus and of the optional `extra_dir` folder.
    One epoch = `crops_per_image` crops per image. Writes epoch-XX.pt after every epoch
    ({'epoch', 'config', 'model'}), epochs.csv + epochs.png (MSE, commitment,
    perplexity and dead codes per epoch), curve.csv (per step) and rejects.json (unusable
    files of extra_dir)."""

    version = 1
    resumable = True
    heavy = True
    max_epochs = luigi.OptionalIntParameter(default=None)
    crops_per_image = luigi.OptionalIntParameter(default=None)
    batch_size = luigi.OptionalIntParameter(default=None)
    crop = luigi.OptionalIntParameter(default=None)
    lr = luigi.OptionalFloatParameter(default=None)
    beta = luigi.OptionalFloatParameter(default=None)
    model = luigi.OptionalDictParameter(default=None)  # VQVAE2 keyword arguments
    # The folder's content enters the key (fingerprint), not its path.
    extra_dir = luigi.OptionalParameter(default=None, significant=False)
    # Resume checkpoints every this many steps (0: at each epoch end); no effect on results.
    ckpt_every = luigi.OptionalIntParameter(default=None, significant=False)
    cached_images = luigi.IntParameter(default=64, significant=False)

    @property
    def extra_folder(self) -> Path | None:
        value = self.setting("extra_dir")
        return Path(value) if value else None

    def requires(self):
        return {"hr": IngestHR()}

    def fingerprint(self) -> dict:
        extra = self.extra_folder
        return {"extra": folder_fingerprint(extra)} if extra else {}

    def _sources(self, out: Path) -> list:
        """A loader per training image (HR corpus, then extra_dir); unusable extra files go
        to rejects.json with their reason."""
        crop, hr_dir = self.settings["crop"], self.input_dir("hr")
        loaders = []
        for img in read_images(hr_dir):
            if min(img.width, img.height) < crop:
                raise ValueError(f"HR image {img.id} ({img.source}, {img.width}x{img.height}) "
                                 f"is smaller than the TrainVQVAE2 crop {crop}")
            loaders.append(functools.partial(read_rgb, image_path(hr_dir, img.id)))
        rejects = []
        if self.extra_folder:
            max_pixels = IngestHR().settings["max_pixels"]
            for entry in walk_inputs(self.extra_folder):
                try:
                    if entry.problem is not None:
                        raise Rejected(entry.problem)
                    decode_hr(entry.path, crop, max_pixels)
                except Rejected as reason:
                    rejects.append({"source": os.fsdecode(entry.path), "reason": str(reason)})
                    continue
                loaders.append(functools.partial(_decoded_rgb, entry.path, crop, max_pixels))
        durable.write_json(out / "rejects.json", rejects)
        return loaders

    def build(self, out: Path) -> dict:
        s = self.settings
        device = resolve_device(gtforge().device)
        loaders = self._sources(out)
        load = functools.lru_cache(maxsize=self.cached_images)(lambda i: loaders[i]())
        steps_per_epoch = math.ceil(len(loaders) * s["crops_per_image"] / s["batch_size"])
        total = steps_per_epoch * s["max_epochs"]

        torch.manual_seed(derive_seed(self.key, "init"))
        model = VQVAE2(**s["model"]).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
        stats, epochs = vq.EpochStats(model.quantize_t.n_embed), []

        def step(i: int) -> dict[str, float]:
            crops = sample_crops(rng(self.key, "batch", i), lambda j: [load(j)], len(loaders),
                                 s["batch_size"], s["crop"])[:, 0]
            losses, codes = vq.train_step(model, opt, crops.to(device).mul_(2).sub_(1), s["beta"])
            stats.add(losses, codes)
            if (i + 1) % steps_per_epoch == 0:
                epoch = (i + 1) // steps_per_epoch
                save_checkpoint(out / vq.epoch_file(epoch), {
                    "epoch": epoch, "config": dict(s["model"]),
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}})
                epochs.append(stats.row(epoch))
                stats.reset()
                durable.write_csv(out / vq.EPOCHS_CSV, epochs)
            return losses

        def set_state(state: dict) -> None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            stats.load(state["stats"])
            epochs[:] = state["epochs"]

        state = TrainState(get=lambda: {"model": model.state_dict(), "opt": opt.state_dict(),
                                        "stats": stats.state(), "epochs": list(epochs)},
                           set=set_state)
        ckpt_every = self.setting("ckpt_every") or steps_per_epoch
        rows = train_loop(step, state, total, out / "checkpoints", ckpt_every, s["seed"],
                          desc="TrainVQVAE2", report=self.report, device=device)
        finish_training(out, None)
        (out / "epochs.png").write_bytes(
            vq.epochs_png(epochs, f"TrainVQVAE2 ({s['max_epochs']} epochs)"))
        return {"images": len(loaders), "steps_per_epoch": steps_per_epoch, "steps": len(rows),
                "parameters": sum(p.numel() for p in model.parameters()),
                "last_epoch": epochs[-1] if epochs else None}


class VQVAEDegradeLR(Stage):
    """Downsample every HR image `scale` times (PIL bicubic, antialiased; pipeline.vqvae.
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
