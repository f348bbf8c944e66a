"""TrainMaskGenerator: train the CFMG on crops of the GT and its three SR variants, or with the
restore prior on restoration items (a cleaner corpus crop, a GT-like input made from it and
the input's variants; pipeline.train.cfmg.restoration_item)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from tasks.base import Stage
from tasks.ingest import IngestHR
from tasks.super_resolve import SR_SCALES, SuperResolveGT, crop_variant, sr_model, variant_settings
from tasks.training import TrainingStage, training_inputs

if TYPE_CHECKING:
    import torch

    from models.cfmg import CFMG
    from pipeline.train.feed import ArrayStore

MODEL_FILE = "cfmg.pt"
SOURCES = ("gt", *(f"sr_x{s}" for s in SR_SCALES))
RESTORE = "restore"  # pipeline.train.cfmg.RESTORE, without importing torch to schedule


def source_stages(chunk: tuple[str, ...] = ()) -> dict[str, Stage]:
    """The fused sources of a chunk's photos in order: the GT (IngestHR), then SuperResolveGT
    x2, x3, x4."""
    return {"gt": IngestHR(chunk=chunk),
            **{f"sr_x{s}": SuperResolveGT(scale=s, chunk=chunk) for s in SR_SCALES}}


def read_sources(stage: Stage, image_id: str) -> list[np.ndarray]:
    """Image `image_id` from every source of `stage` (uint8 RGB HWC each, GT size)."""
    images = [read_rgb(image_path(stage.input_dir(name), image_id)) for name in SOURCES]
    if any(im.shape != images[0].shape for im in images):
        raise RuntimeError(f"image {image_id}: sources differ in size "
                           f"{[im.shape for im in images]}")
    return images


def load_cfmg(path: Path, device: torch.device | str = "cpu") -> CFMG:
    """The trained CFMG from a TrainMaskGenerator output (weights_only load), in eval mode."""
    from models.cfmg import CFMG
    from pipeline.train.loop import load_checkpoint

    payload = load_checkpoint(path, "cpu")
    model = CFMG(sources=len(SOURCES), **payload["config"])
    model.load_state_dict(payload["state"])
    return model.to(device).eval()


class TrainMaskGenerator(TrainingStage):
    """AdamW + warm-up/cosine + gradient clipping on (1-c^2) MSE - c^2 P (pipeline.train.cfmg);
    `metrics` is a {name: weight} dict for P: pyiqa metrics (negative weights for lower-better
    ones) or "restore". With "restore" the CFMG trains on `restoration_crops`
    restoration items (clean crops shrunk by `shrink`, inputs degraded within `versions`,
    their variants made by the SR model as SuperResolveGT makes a photo's), not on the
    photos' own variants. Writes cfmg.pt ({'state', 'config'}), curve.csv and curve.png."""

    version = 5  # 5: the restore prior (4: crops from DataLoader workers, seeded per sample)
    uses_iqa = True
    # Luigi runs higher priorities (and their requirements) first: this training and what it
    # needs are the build's longest chain, so the other workers fill in around it.
    priority = 10
    iterations = luigi.OptionalIntParameter(default=None)
    batch_size = luigi.OptionalIntParameter(default=None)
    crop = luigi.OptionalIntParameter(default=None)
    lr = luigi.OptionalFloatParameter(default=None)
    weight_decay = luigi.OptionalFloatParameter(default=None)
    warmup = luigi.OptionalIntParameter(default=None)
    grad_clip = luigi.OptionalFloatParameter(default=None)
    model = luigi.OptionalDictParameter(default=None)  # CFMG width, stages, bins, hidden, dropout
    metrics = luigi.OptionalDictParameter(default=None)  # {pyiqa metric | restore: weight}
    restoration_crops = luigi.OptionalIntParameter(default=None)  # restore prior: training items
    shrink = luigi.OptionalListParameter(default=None)  # clean crop = side/f pixels, f in [lo, hi]
    versions = luigi.OptionalDictParameter(default=None)  # pipeline.quality.judge.VersionRanges
    # Per-step seeding makes the result independent of the checkpoint interval.
    ckpt_every = luigi.OptionalIntParameter(default=None, significant=False)

    @property
    def restores(self) -> bool:
        """Whether P has the restore prior (training on restoration items)."""
        return RESTORE in self.settings["metrics"]

    def requires(self):
        """The photos' sources (GT, SR variants), or with the restore prior the photos and the
        SR model that makes the items' variants."""
        if self.restores:
            deps = training_inputs(lambda chunk: {"gt": IngestHR(chunk=chunk)})
            deps["sr"] = sr_model()
        else:
            deps = training_inputs(source_stages)
        return deps

    def fingerprint(self) -> dict:
        """How the restoration items' variants are made."""
        return variant_settings() if self.restores else {}

    def _arrays(self, out: Path) -> tuple[ArrayStore, list[list[str]]]:
        """The GT and its SR variants as training arrays, and one group of names per photo
        (sources in SOURCES order); ValueError naming the photo when their sizes differ."""
        photos = self.training_photos(*SOURCES)
        ids = [img.id for img, _ in photos]
        groups = [[f"{i}_{name}" for name in SOURCES] for i in ids]
        store = self.array_store(out, {
            f"{img.id}_{name}": functools.partial(read_rgb, image_path(dirs[name], img.id))
            for img, dirs in photos for name in SOURCES})
        for i, group in zip(ids, groups, strict=True):
            sizes = {store.get(name).shape for name in group}
            if len(sizes) > 1:
                raise ValueError(f"image {i}: its sources {SOURCES} differ in size {sizes}")
        return store, groups

    def _restoration_arrays(self, out: Path) -> tuple[ArrayStore, list[list[str]]]:
        """`restoration_crops` items (pipeline.train.cfmg.restoration_item, `crop` pixels,
        item k drawn from the stage key and k) as training arrays, one group per item: the
        input, its variants (SOURCES order), then the clean crop. The photos are read
        memory-mapped from the same store; a resumed run keeps the items it made."""
        from pipeline.quality.judge import VersionRanges
        from pipeline.train import cfmg
        from pipeline.train.judge import border

        s, device = self.settings, self.device
        store = self.array_store(out, {
            f"photo_{img.id}": functools.partial(read_rgb, image_path(dirs["gt"], img.id))
            for img, dirs in self.training_photos("gt")})
        photos = [store.get(p.stem) for p in sorted(store.folder.glob("photo_*.npy"))]
        variant = crop_variant(self.input_stages()["sr"].load_model(device), device)
        names = (*SOURCES, "clean")
        groups = [[f"item{k:06d}_{name}" for name in names] for k in range(s["restoration_crops"])]
        for k, group in self.progress(enumerate(groups), len(groups),
                                      f"{self.get_task_family()}: restoration items"):
            if store.path(group[-1]).exists():
                continue
            item = cfmg.restoration_item(
                photos, s["crop"], border(s["crop"]), tuple(s["shrink"]),
                VersionRanges(**s["versions"]), lambda x: [variant(x, v) for v in SR_SCALES],
                rng(self.key, "restoration", k))
            for name, image in zip(group, item, strict=True):
                store.put(name, functools.partial(np.asarray, image))
        return store, groups

    def build(self, out: Path) -> dict:
        from pipeline.quality.iqa import create_metric  # lazy: pyiqa is slow to import
        from pipeline.train import cfmg
        from pipeline.train.feed import AlignedCrops, CropBatches
        from pipeline.train.loop import cpu_state, save_checkpoint

        s, device = self.settings, self.device
        store, groups = self._restoration_arrays(out) if self.restores else self._arrays(out)
        feed = self.feed(CropBatches(store, groups, AlignedCrops(s["crop"], flips=4),
                                     s["batch_size"], self.seed_for("batch"), stack=True),
                         s["iterations"])
        perceptual = cfmg.Perceptual(s["metrics"], device, create_metric)
        training = cfmg.build_training(
            len(SOURCES), s["model"], perceptual, lr=s["lr"], weight_decay=s["weight_decay"],
            warmup=s["warmup"], total=s["iterations"], grad_clip=s["grad_clip"],
            seed=self.seed_for("init"), device=device, precision=self.network_precision)

        def step(i: int) -> dict[str, float]:
            c = float(rng(self.key, "c", i).uniform(0, 1))
            batch = feed(i).to(device)
            if self.restores:  # the clean crops come last
                return training.step(i, batch[:, :-1], c, clean=batch[:, -1])
            return training.step(i, batch, c)

        def save() -> None:
            save_checkpoint(out / MODEL_FILE, {"state": cpu_state(training.model),
                                               "config": dict(s["model"])})

        rows = self.train(out, training, step, s["iterations"], save, "TrainMaskGenerator")
        return {"final": rows[-1] if rows else None, "sources": list(SOURCES)}
