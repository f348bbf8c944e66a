"""TrainVQVAE2: the undertrained VQ-VAE-2 behind VQVAEDegradeLR (Ito et al., 2025; docs/VQVAE.md).

It trains max_epochs epochs once and keeps the weights after every epoch (epoch-XX.pt);
VQVAEDegradeLR(epochs) picks the checkpoint it wants, so asking for another epoch count reuses
the same training.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import luigi
import numpy as np

from pipeline.image.ingest import Rejected, decode_hr, folder_fingerprint, walk_inputs
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from tasks.base import input_hashes
from tasks.ingest import IngestHR
from tasks.training import TrainingStage, training_inputs


def _decoded_rgb(path: Path, min_side: int, max_pixels: int):
    return decode_hr(path, min_side, max_pixels).rgb


class TrainVQVAE2(TrainingStage):
    """Train a two-level VQ-VAE-2 (loss = MSE + beta * commitment, EMA codebooks, Adam) on
    random crops with random flips of the HR corpus and of the optional `extra_dir` folder.
    One epoch = `crops_per_image` crops per image. Writes epoch-XX.pt after every epoch
    ({'epoch', 'config', 'model'}), epochs.csv + epochs.png (MSE, commitment,
    perplexity and dead codes per epoch), curve.csv (per step) and rejects.json (unusable
    files of extra_dir)."""

    version = 3  # 3: crops from DataLoader workers, seeded per sample
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

    @property
    def extra_folder(self) -> Path | None:
        value = self.resolved("extra_dir")
        return Path(value) if value else None

    def requires(self):
        return training_inputs(lambda chunk: {"hr": IngestHR(chunk=chunk)})

    def fingerprint(self) -> dict:
        extra = self.extra_folder
        return {"extra": folder_fingerprint(extra, input_hashes())} if extra else {}

    def _sources(self, out: Path) -> dict[str, Callable[[], np.ndarray]]:
        """A loader per training image by name (HR corpus, then extra_dir); unusable extra
        files go to rejects.json with their reason."""
        crop = self.settings["crop"]
        loaders = {}
        for img, dirs in self.training_photos("hr"):
            if min(img.width, img.height) < crop:
                raise ValueError(f"HR image {img.id} ({img.width}x{img.height}) is smaller "
                                 f"than the TrainVQVAE2 crop {crop}")
            loaders[img.id] = functools.partial(read_rgb, image_path(dirs["hr"], img.id))
        rejects = []
        if self.extra_folder:
            max_pixels = IngestHR().settings["max_pixels"]
            for k, entry in enumerate(walk_inputs(self.extra_folder)):
                try:
                    if entry.problem is not None:
                        raise Rejected(entry.problem)
                    decode_hr(entry.path, crop, max_pixels)
                except Rejected as reason:
                    rejects.append({"source": os.fsdecode(entry.path), "reason": str(reason)})
                    continue
                loaders[f"extra-{k:06d}"] = functools.partial(_decoded_rgb, entry.path, crop,
                                                              max_pixels)
        durable.write_json(out / "rejects.json", rejects)
        return loaders

    def build(self, out: Path) -> dict:
        from pipeline.train import vqvae as vq
        from pipeline.train.feed import AlignedCrops, CropBatches
        from pipeline.train.loop import cpu_state, parameter_count, save_checkpoint

        s, device = self.settings, self.device
        loaders = self._sources(out)
        store = self.array_store(out, loaders)
        steps_per_epoch = math.ceil(len(loaders) * s["crops_per_image"] / s["batch_size"])
        total = steps_per_epoch * s["max_epochs"]
        feed = self.feed(CropBatches(store, [[name] for name in loaders],
                                     AlignedCrops(s["crop"], flips=4), s["batch_size"],
                                     self.seed_for("batch")), total)
        training = vq.build_training(s["model"], s["lr"], s["beta"], steps_per_epoch,
                                     self.seed_for("init"), device, self.network_precision)

        def step(i: int) -> dict[str, float]:
            (crops,) = feed(i)
            losses = training.step(i, crops.to(device).mul_(2).sub_(1))
            if (i + 1) % steps_per_epoch == 0:  # training.step closed an epoch: keep it
                epoch = (i + 1) // steps_per_epoch
                save_checkpoint(out / vq.epoch_file(epoch), {
                    "epoch": epoch, "config": dict(s["model"]),
                    "model": cpu_state(training.model)})
                durable.write_csv(out / vq.EPOCHS_CSV, training.epochs)
            return losses

        def save() -> None:
            (out / "epochs.png").write_bytes(
                vq.epochs_png(training.epochs, f"TrainVQVAE2 ({s['max_epochs']} epochs)"))

        rows = self.train(out, training, step, total, save, None,
                          ckpt_every=self.resolved("ckpt_every") or steps_per_epoch)
        return {"images": len(loaders), "steps_per_epoch": steps_per_epoch, "steps": len(rows),
                "parameters": parameter_count(training.model),
                "last_epoch": training.epochs[-1] if training.epochs else None}
