"""SelectPatches: the HGGT crop grid on every HR image, kept where any version has texture."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import numpy as np

from pipeline.image.ingest import read_images
from pipeline.image.patches import (
    HF_MEASURES,
    PATCHES_NPZ,
    grid_positions,
    load_patches,
    save_patches,
    texture_mask,
)
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from tasks.candidates import candidate_stages
from tasks.corpus import PhotoStage
from tasks.ingest import IngestHR

STATS = "patch_stats.json"
ORIGINAL = "original"


class SelectPatches(PhotoStage):
    """patches.npz (pipeline.image.patches.save_patches) over the HR images in images.json order,
    grid positions row-major; patch_stats.json counts per image the grid positions, those
    each version passes, and those kept (any version passes)."""

    version = 2
    global_settings = ("scale",)
    crop_size = luigi.OptionalIntParameter(default=None)
    step = luigi.OptionalIntParameter(default=None)
    offset_max = luigi.OptionalListParameter(default=None)
    offset_thresholds = luigi.OptionalListParameter(default=None)
    jitter = luigi.OptionalIntParameter(default=None)
    std_min = luigi.OptionalFloatParameter(default=None)
    hf_min = luigi.OptionalFloatParameter(default=None)
    hf_measure = luigi.OptionalChoiceParameter(choices=list(HF_MEASURES), default=None)

    def requires(self):
        return {"hr": IngestHR(chunk=self.chunk), **candidate_stages(self.chunk)}

    def patches(self) -> dict:
        """The selected patches (pipeline.image.patches.load_patches)."""
        return load_patches(self.out_dir / PATCHES_NPZ)

    def stats(self) -> dict:
        """patch_stats.json: per image id, grid positions, passed per version, kept."""
        return json.loads((self.out_dir / STATS).read_text())["images"]

    def build(self, out: Path) -> dict:
        s = self.settings
        crop = s["crop_size"]
        hr_dir = self.input_dir("hr")
        versions = {ORIGINAL: hr_dir, **{name: stage.out_dir for name, stage
                                         in self.input_stages().items() if name != "hr"}}
        images = read_images(hr_dir)
        ids: list[str] = []
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        stats: dict[str, dict] = {}
        for img in self.progress(images, len(images), "SelectPatches"):
            pos = grid_positions(img.height, img.width, crop, s["step"], s["offset_max"],
                                 s["offset_thresholds"], s["jitter"], s["scale"],
                                 np.random.default_rng(self.seed_for(img.id)))
            keep = np.zeros(len(pos), bool)
            passed = {}
            for name, folder in versions.items():
                path = image_path(folder, img.id)
                rgb = read_rgb(path)
                if rgb.shape[:2] != (img.height, img.width):
                    raise RuntimeError(f"{path}: {name} image is {rgb.shape[1]}x{rgb.shape[0]}, "
                                       f"the HR image is {img.width}x{img.height}")
                ok = texture_mask(rgb, pos, crop, s["std_min"], s["hf_min"], s["hf_measure"])
                passed[name] = int(ok.sum())
                keep |= ok
            ids += [img.id] * int(keep.sum())
            ys.append(pos[keep, 0])
            xs.append(pos[keep, 1])
            stats[img.id] = {"positions": len(pos), "passed": passed, "kept": int(keep.sum())}
        kept = len(ids)  # may be 0 in a chunk; WriteManifest fails a build with none at all
        none = [np.zeros(0, np.int64)]
        save_patches(out / PATCHES_NPZ, ids, np.concatenate(xs + none), np.concatenate(ys + none),
                     crop)
        positions = sum(v["positions"] for v in stats.values())
        durable.write_json(out / STATS, {"positions": positions, "kept": kept, "images": stats})
        return {"images": len(images), "positions": positions, "kept": kept}
