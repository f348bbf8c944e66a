"""SuperResolveGT(scale): every GT super-resolved at `scale` and resized back to its size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.image.ingest import read_images
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from tasks.base import Stage
from tasks.config import gtforge
from tasks.corpus import PhotoStage
from tasks.ingest import IngestHR
from tasks.train_sr import sr_model_stage

if TYPE_CHECKING:
    import torch

    from models.rrdb import RRDBNet

SR_SCALES = (2, 3, 4)


def sr_model() -> Stage:
    """The stage of the SR model behind SuperResolveGT: LoadSR or TrainSR."""
    return sr_model_stage(SuperResolveGT(scale=SR_SCALES[0]).checkpoint)


def variant_settings() -> dict:
    """The SuperResolveGT settings a crop's variants (`crop_variant`) depend on: for the key
    of a stage that makes its own."""
    return {"keep_low": SuperResolveGT(scale=SR_SCALES[0]).settings["keep_low"]}


def crop_variant(model: RRDBNet, device: torch.device | str
                 ) -> Callable[[np.ndarray, int], np.ndarray]:
    """(crop, scale) -> the crop's variant at that scale as SuperResolveGT makes a photo's
    (its keep_low), in one tile: for crops of a few hundred pixels, uint8 RGB HWC."""
    from pipeline.train.sr import super_resolve

    keep_low = variant_settings()["keep_low"]
    return lambda x, s: super_resolve(model, x, s, tile=4096, overlap=0, device=device,
                                      keep_low=keep_low)


class SuperResolveGT(PhotoStage):
    """images/<id>.png: uint8 RGB at the GT size. The SR model runs on the GT (padded to a
    whole ratio) resized to scale/m of its size (m = the model's scale), tiled (`tile` input
    pixels, `overlap`, `batch` tiles per pass), and each tile's output is brought back by
    scale x scale block means as it comes (pipeline.train.sr.super_resolve)."""

    version = 3  # 3: exact s x s block means per tile (GT padded to a whole ratio), uint8 tiles
    heavy = True
    scale = luigi.ChoiceParameter(choices=SR_SCALES, var_type=int)
    tile = luigi.OptionalIntParameter(default=None)
    overlap = luigi.OptionalIntParameter(default=None)
    keep_low = luigi.OptionalFloatParameter(default=None)  # px: the GT's low-pass is kept
    batch = luigi.OptionalIntParameter(default=None, significant=False)  # tiles per pass (speed)
    # Empty: TrainSR; a path: LoadSR. Not in the key itself: the SR stage's key is.
    sr_checkpoint = luigi.OptionalParameter(default=None, significant=False)

    @property
    def checkpoint(self) -> str | None:
        return self.resolved("sr_checkpoint")

    def requires(self):
        return {"hr": IngestHR(chunk=self.chunk), "sr": sr_model_stage(self.checkpoint)}

    def build(self, out: Path) -> dict:
        from pipeline.train import sr
        from pipeline.train.device import resolve_device

        s = self.settings
        device = resolve_device(gtforge().device)
        model = self.input_stages()["sr"].load_model(device)
        (out / "images").mkdir()
        images = read_images(self.input_dir("hr"))
        for img in self.progress(images, len(images), f"SuperResolveGT x{s['scale']}"):
            gt = read_rgb(image_path(self.input_dir("hr"), img.id))
            variant = sr.super_resolve(model, gt, s["scale"], s["tile"], s["overlap"], device,
                                       s["keep_low"], self.network_precision,
                                       self.resolved("batch"))
            write_rgb(image_path(out, img.id), variant)
        return {"images": len(images), "model_scale": model.scale}
