"""EnhanceHR(backbone, degradation): a trained enhancer applied to every HR image of a chunk,
a candidate GT (rcan_noise, rcan_blur, elan_noise, elan_blur in tasks/candidates.py)."""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.image.ingest import read_images
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from tasks.config import gtforge
from tasks.corpus import PhotoStage
from tasks.ingest import IngestHR
from tasks.train_enhancer import BACKBONES, DEGRADATIONS, TrainEnhancer


class EnhanceHR(PhotoStage):
    """images/<id>.png: uint8 RGB, the size of the HR image, from the TrainEnhancer generator
    applied in overlapping tiles (`tile` pixels, `overlap`, `batch` tiles per forward pass;
    pipeline.train.tiling.tiled_apply), written tile by tile as uint8."""

    version = 2  # 2: batched tiles cut mid-overlap, uint8 per tile; ELAN windows do not wrap
    heavy = True
    backbone = luigi.ChoiceParameter(choices=BACKBONES)
    degradation = luigi.ChoiceParameter(choices=DEGRADATIONS)
    tile = luigi.OptionalIntParameter(default=None)
    overlap = luigi.OptionalIntParameter(default=None)
    batch = luigi.OptionalIntParameter(default=None, significant=False)  # tiles per pass (speed)

    def requires(self):
        return {"hr": IngestHR(chunk=self.chunk),
                "model": TrainEnhancer(backbone=self.backbone, degradation=self.degradation)}

    def build(self, out: Path) -> dict:
        from pipeline.train.device import resolve_device
        from pipeline.train.enhancer import enhance

        s = self.settings
        device = resolve_device(gtforge().device)
        model = self.input_stages()["model"].load_generator(device)
        (out / "images").mkdir()
        images = read_images(self.input_dir("hr"))
        for img in self.progress(images, len(images), f"EnhanceHR {self.backbone}_"
                                 f"{self.degradation}"):
            rgb = read_rgb(image_path(self.input_dir("hr"), img.id))
            enhanced = enhance(model, rgb, s["tile"], s["overlap"], device,
                               self.network_precision, self.resolved("batch"))
            write_rgb(image_path(out, img.id), enhanced)
        return {"images": len(images)}
