"""TrainVQVAE2: the undertrained VQ-VAE-2 behind VQVAEDegradeLR (Ito et al., 2025; docs/VQVAE.md).

It trains max_epochs epochs once and keeps the weights after every epoch (epoch-XX.pt);
VQVAEDegradeLR(epochs) picks the checkpoint it wants, so asking for another epoch count reuses
the same training.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import luigi
import torch

from models.vqvae2 import VQVAE2
from pipeline.image.ingest import Rejected, decode_hr, folder_fingerprint, read_images, walk_inputs
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import derive_seed, rng
from pipeline.train import vqvae as vq
from pipeline.train.cfmg import sample_crops
from pipeline.train.device import resolve_device
from pipeline.train.loop import (
    TrainState,
    finish_training,
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
