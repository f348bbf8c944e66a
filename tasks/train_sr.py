"""TrainSR / LoadSR: the SR model that SuperResolveGT applies to the GT.

`[paper.SuperResolveGT] sr_checkpoint` chooses: empty -> TrainSR (offline: a small RRDBNet
trained on the DegradeLR / IngestHR pairs); a path -> LoadSR (a Real-ESRGAN-format file, e.g.
RealESRGAN_x4plus.pth). Both write model.pt ({'params': state dict}), read by
pipeline.train.sr.load_rrdb.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import luigi

from pipeline.store.durable import sha256_file
from pipeline.store.imageio import image_path, read_rgb
from tasks.base import Stage
from tasks.degrade import DegradeLR, load_recipe
from tasks.ingest import IngestHR
from tasks.training import TrainingStage, training_inputs

if TYPE_CHECKING:
    import torch

    from models.rrdb import RRDBNet

MODEL_FILE = "model.pt"


class _SRModel:
    """What TrainSR and LoadSR share (a mixin): model.pt, read back by `load_model`."""

    def load_model(self, device: torch.device | str = "cpu") -> RRDBNet:
        """The SR model, in eval mode on `device`."""
        from pipeline.train import sr

        return sr.load_rrdb(self.out_dir / MODEL_FILE, device)


class TrainSR(_SRModel, TrainingStage):
    """Train an RRDBNet (x[gtforge] scale) with L1 on random aligned LR/HR crops, Adam with
    betas (0.9, 0.99) at a constant learning rate (the Real-ESRNet recipe). With
    `second_order`, every LR crop is degraded once more at LR scale (Real-ESRGAN's second
    order), so that the model also removes blur and noise of the LR's own scale: applied to a
    GT, as SuperResolveGT does, it then restores the GT's own residual degradations, as a
    pretrained Real-ESRGAN would."""

    version = 4  # 4: crops from DataLoader workers, seeded per sample
    global_settings = ("scale",)
    iterations = luigi.OptionalIntParameter(default=None)
    batch_size = luigi.OptionalIntParameter(default=None)
    crop = luigi.OptionalIntParameter(default=None)  # LR pixels
    lr = luigi.OptionalFloatParameter(default=None)
    model = luigi.OptionalDictParameter(default=None)  # RRDBNet num_feat, num_block, num_grow_ch
    # [degradation.<name>] recipes (final_scale 1) applied once more to each LR crop, on the fly
    second_order = luigi.OptionalListParameter(default=None)
    # Per-step seeding makes the result independent of the checkpoint interval.
    ckpt_every = luigi.OptionalIntParameter(default=None, significant=False)

    def requires(self):
        return training_inputs(lambda chunk: {"hr": IngestHR(chunk=chunk),
                                               "lr": DegradeLR(chunk=chunk)})

    def build(self, out: Path) -> dict:
        from pipeline.train import sr
        from pipeline.train.feed import CropBatches
        from pipeline.train.loop import parameter_count

        s, scale, device = self.settings, self.settings["scale"], self.device
        photos = self.training_photos("hr", "lr")
        ids = [img.id for img, _ in photos]
        store = self.array_store(out, {
            f"{img.id}_{role}": functools.partial(read_rgb, image_path(dirs[role], img.id))
            for role in ("lr", "hr") for img, dirs in photos})
        sampler = sr.SecondOrderCrops(s["crop"], [load_recipe(n) for n in s["second_order"]])
        feed = self.feed(CropBatches(store, [[f"{i}_lr", f"{i}_hr"] for i in ids], sampler,
                                     s["batch_size"], self.seed_for("batch")), s["iterations"])
        training = sr.build_training(scale, s["model"], s["lr"], self.seed_for("init"), device,
                                     self.network_precision)

        def step(i: int) -> dict[str, float]:
            lr, hr = feed(i)
            return training.step(i, lr.to(device), hr.to(device))

        rows = self.train(out, training, step, s["iterations"],
                          lambda: sr.save_rrdb(out / MODEL_FILE, training.model),
                          "TrainSR (L1)")
        return {"final_l1": rows[-1]["l1"] if rows else None,
                "parameters": parameter_count(training.model)}


class LoadSR(_SRModel, Stage):
    """Check and copy a user-supplied Real-ESRGAN-format RRDBNet file to model.pt. The key
    follows the file's content (sha256), not its path."""

    version = 1
    checkpoint = luigi.Parameter(significant=False)

    def requires(self):
        return []

    def fingerprint(self) -> dict:
        path = Path(self.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"sr_checkpoint = {path}: no such file. Put a Real-ESRGAN-format RRDBNet file "
                f"there (e.g. RealESRGAN_x4plus.pth), or leave [paper.SuperResolveGT] "
                f"sr_checkpoint empty to train a small model offline (TrainSR)")
        return {"checkpoint_sha256": sha256_file(path)}

    def build(self, out: Path) -> dict:
        from pipeline.train import sr

        model = sr.load_rrdb(Path(self.checkpoint))
        sr.save_rrdb(out / MODEL_FILE, model)
        return {"source": str(self.checkpoint), "config": sr.rrdb_config(model.state_dict())}


def sr_model_stage(checkpoint: str | None) -> Stage:
    """LoadSR(checkpoint) for a path, TrainSR() when `checkpoint` is empty or None."""
    return LoadSR(checkpoint=str(checkpoint)) if checkpoint else TrainSR()
