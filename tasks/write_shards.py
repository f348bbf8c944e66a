"""WriteShards: crop every kept patch from every source and write HDF5 shards (format v1)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import luigi
import numpy as np

from pipeline.imageio import image_path, read_rgb
from pipeline.ingest import read_images
from pipeline.patches import load_patches
from pipeline.shards import ShardWriter
from tasks.base import Stage
from tasks.candidates import candidate_stages
from tasks.degrade import DegradeLR
from tasks.ingest import IngestHR
from tasks.score_patches import ScorePatches
from tasks.select_patches import SelectPatches
from tasks.vqvae import VQVAEDegradeLR

DATASET = "dataset"


def _crop(image: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    return image[y:y + size, x:x + size]


class WriteShards(Stage):
    version = 1
    global_settings = ("scale",)
    samples_per_shard = luigi.OptionalIntParameter(default=None)
    compression = luigi.OptionalChoiceParameter(choices=["none", "lzf", "gzip"], default=None)

    def requires(self):
        candidates = {f"candidate:{name}": stage for name, stage in candidate_stages().items()}
        return {"hr": IngestHR(), "patches": SelectPatches(), "scores": ScorePatches(),
                "lq": DegradeLR(), "lq_vqvae": VQVAEDegradeLR(), **candidates}

    @property
    def candidate_dirs(self) -> dict[str, Path]:
        return {role.split(":", 1)[1]: stage.out_dir
                for role, stage in self.input_stages().items() if role.startswith("candidate:")}

    def build(self, out: Path) -> dict:
        s, scale = self.settings, self.settings["scale"]
        patches = load_patches(self.input_dir("patches") / "patches.npz")
        scored = np.load(self.input_dir("scores") / "scores.npz")
        names = [str(n) for n in scored["candidate_names"]]
        if names != list(self.candidate_dirs):
            raise RuntimeError(f"ScorePatches scored {names}, WriteShards expected "
                               f"{list(self.candidate_dirs)}")
        images = read_images(self.input_dir("hr"))
        source_index = {img.id: i for i, img in enumerate(images)}
        by_image: dict[str, list[int]] = defaultdict(list)
        for n in np.flatnonzero(scored["keep"]):
            by_image[str(patches["image_id"][n])].append(int(n))
        size = int(patches["size"])
        writer = ShardWriter(
            out / DATASET, samples_per_shard=s["samples_per_shard"], patch_size=size, scale=scale,
            candidate_names=names, metric_names=[str(m) for m in scored["metric_names"]],
            compression=None if s["compression"] == "none" else s["compression"],
            params={"stage_key": self.key, **s}, sources=[img.source for img in images])
        with writer:
            for image_id in self.progress(list(by_image), len(by_image), "WriteShards"):
                original = read_rgb(image_path(self.input_dir("hr"), image_id))
                candidates = [read_rgb(image_path(d, image_id))
                              for d in self.candidate_dirs.values()]
                lq = read_rgb(image_path(self.input_dir("lq"), image_id))
                lq_vq = read_rgb(image_path(self.input_dir("lq_vqvae"), image_id))
                for n in by_image[image_id]:
                    x, y = int(patches["x"][n]), int(patches["y"][n])
                    writer.add(
                        gt_original=_crop(original, x, y, size),
                        gt_candidates=np.stack([_crop(c, x, y, size) for c in candidates])
                        if candidates else np.zeros((0, size, size, 3), np.uint8),
                        labels=scored["labels"][n], scores=scored["scores"][n],
                        lq=_crop(lq, x // scale, y // scale, size // scale),
                        lq_vqvae=_crop(lq_vq, x // scale, y // scale, size // scale),
                        image_id=image_id, x=x, y=y, source_index=source_index[image_id])
        return {"samples": int(scored["keep"].sum()), "patches_selected": len(patches["x"])}
