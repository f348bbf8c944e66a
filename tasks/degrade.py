"""DegradeLR: HGGT's single-stage degradation of every HR image to the LR of its SR pair.

The recipe (ranges and probabilities) is a [degradation.<name>] section of luigi.cfg; its
values enter the cache key, so editing the section reruns these stages and everything after.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import luigi
import numpy as np

from pipeline.image.degrade import Recipe, apply, draw
from pipeline.image.ingest import read_images
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from tasks.config import section
from tasks.corpus import PhotoStage
from tasks.ingest import IngestHR

DRAWS_JSON = "draws.json"


def load_recipe(name: str) -> Recipe:
    """The recipe in luigi.cfg section [degradation.<name>]."""
    return Recipe.from_section(section(f"degradation.{name}"), f"degradation.{name}")


class DegradeLR(PhotoStage):
    """LR inputs of the SR pairs: images/<id>.png of size (H // scale, W // scale), where
    scale = [gtforge] scale must equal the recipe's final_scale, each from its own seeded draw
    (draws.json). The chain runs on the HR image cropped at the bottom and right to multiples
    of the scale, so LR pixel j covers HR pixels [scale*j, scale*j + scale), as
    VQVAEDegradeLR's clean LR does."""

    version = 2
    global_settings = ("scale",)
    recipe = luigi.OptionalParameter(default=None)  # a [degradation.<recipe>] section

    def requires(self):
        return {"hr": IngestHR(chunk=self.chunk)}

    def fingerprint(self) -> dict:
        return {"recipe_values": load_recipe(self.settings["recipe"]).asdict()}

    def build(self, out: Path) -> dict:
        recipe, scale = load_recipe(self.settings["recipe"]), self.settings["scale"]
        if recipe.final_scale != scale:
            raise ValueError(f"[degradation.{self.settings['recipe']}] final_scale = "
                             f"{recipe.final_scale} but [gtforge] scale = {scale}: DegradeLR "
                             "writes (H // scale, W // scale) images; make them equal")
        (out / "images").mkdir()
        images = read_images(self.input_dir("hr"))
        draws: dict[str, dict] = {}
        for img in self.progress(images, len(images)):
            hr = read_rgb(image_path(self.input_dir("hr"), img.id))
            generator = np.random.default_rng(self.seed_for(img.id))
            choice = draw(recipe, generator)
            write_rgb(image_path(out, img.id), apply(hr, choice, generator, scale))
            draws[img.id] = asdict(choice)
        durable.write_json(out / DRAWS_JSON, draws)
        return {"images": len(images)}
