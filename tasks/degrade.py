"""DegradeForEnhancer / DegradeLR: HGGT's single-stage degradation of every HR image.

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
from tasks.base import Stage
from tasks.config import section
from tasks.ingest import IngestHR

DRAWS_JSON = "draws.json"


def load_recipe(name: str) -> Recipe:
    """The recipe in luigi.cfg section [degradation.<name>]."""
    return Recipe.from_section(section(f"degradation.{name}"), f"degradation.{name}")


class _DegradeImages:
    """What both stages share (a mixin, so luigi registers no abstract task): the IngestHR
    input, the recipe in the key, and one degraded output per item with its own seed."""

    @property
    def recipe_name(self) -> str:
        """The name of the [degradation.<name>] section this stage uses."""
        raise NotImplementedError

    @property
    def recipe_spec(self) -> Recipe:
        return load_recipe(self.recipe_name)

    def requires(self):
        return {"hr": IngestHR()}

    def fingerprint(self) -> dict:
        return {"recipe_values": self.recipe_spec.asdict()}

    def items(self, image_id: str) -> list[tuple[str, tuple]]:
        """(output name, seed item) of every output of one image."""
        raise NotImplementedError

    def degrade_all(self, out: Path, recipe: Recipe) -> dict:
        (out / "images").mkdir()
        images = read_images(self.input_dir("hr"))
        draws: dict[str, dict] = {}
        for img in self.progress(images, len(images)):
            hr = read_rgb(image_path(self.input_dir("hr"), img.id))
            for name, item in self.items(img.id):
                generator = np.random.default_rng(self.seed_for(*item))
                choice = draw(recipe, generator)
                write_rgb(image_path(out, name), apply(hr, choice, generator, recipe.final_scale))
                draws[name] = asdict(choice)
        durable.write_json(out / DRAWS_JSON, draws)
        return {"images": len(images), "outputs": len(draws)}


class DegradeForEnhancer(_DegradeImages, Stage):
    """Training inputs of the 1x enhancers: `variants` degraded copies of each HR image at the
    HR size, images/<id>_<v>.png, with the `noise` or `blur` recipe."""

    version = 2
    degradation = luigi.ChoiceParameter(choices=["noise", "blur"])
    variants = luigi.OptionalIntParameter(default=None)

    @property
    def recipe_name(self) -> str:
        return self.degradation

    def items(self, image_id: str) -> list[tuple[str, tuple]]:
        return [(f"{image_id}_{v}", (image_id, v)) for v in range(self.settings["variants"])]

    def build(self, out: Path) -> dict:
        recipe = self.recipe_spec
        if self.settings["variants"] < 1:
            raise ValueError(f"DegradeForEnhancer variants = {self.settings['variants']}: "
                             "needs at least 1")
        if recipe.final_scale != 1:
            raise ValueError(f"[degradation.{self.degradation}] final_scale = "
                             f"{recipe.final_scale}: the enhancer inputs keep the HR size "
                             "(final_scale = 1)")
        return self.degrade_all(out, recipe)


class DegradeLR(_DegradeImages, Stage):
    """LR inputs of the SR pairs: images/<id>.png of size (H // scale, W // scale), where
    scale = [gtforge] scale must equal the recipe's final_scale. The chain runs on the HR image
    cropped at the bottom and right to multiples of the scale, so LR pixel j covers HR pixels
    [scale*j, scale*j + scale), as VQVAEDegradeLR's clean LR does."""

    version = 2
    global_settings = ("scale",)
    recipe = luigi.OptionalParameter(default=None)  # a [degradation.<recipe>] section

    @property
    def recipe_name(self) -> str:
        return self.settings["recipe"]

    def items(self, image_id: str) -> list[tuple[str, tuple]]:
        return [(image_id, (image_id,))]

    def build(self, out: Path) -> dict:
        recipe, scale = self.recipe_spec, self.settings["scale"]
        if recipe.final_scale != scale:
            raise ValueError(f"[degradation.{self.recipe_name}] final_scale = "
                             f"{recipe.final_scale} but [gtforge] scale = {scale}: DegradeLR "
                             "writes (H // scale, W // scale) images; make them equal")
        return self.degrade_all(out, recipe)
