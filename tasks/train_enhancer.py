"""TrainEnhancer(backbone, degradation): one of HGGT's four 1x enhancers (docs/ENHANCERS.md).

Output: generator.pt (the generator's plain state dict; its size is this stage's `rcan` or
`elan` setting), curve.csv and curve.png.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.image.ingest import read_images
from pipeline.store.durable import sha256_file
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from pipeline.train.loss_settings import LossWeights, require_vgg19_file
from tasks.base import Stage
from tasks.degrade import DegradeForEnhancer
from tasks.ingest import IngestHR
from tasks.training import TrainingStage

if TYPE_CHECKING:
    import torch

    from pipeline.train.losses import PerceptualLoss

GENERATOR_FILE = "generator.pt"
BACKBONES = ("rcan", "elan")
DEGRADATIONS = ("noise", "blur")
NO_VGG_WARNING = ("no VGG19 weights configured ([paper.TrainEnhancer] vgg19_weights is empty): "
                  "trained without the perceptual loss (docs/ENHANCERS.md)")

log = logging.getLogger("luigi-interface")


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


class TrainEnhancer(TrainingStage):
    """Train the `backbone` generator (RCAN or ELAN, no upsampler) to turn the
    DegradeForEnhancer(`degradation`) images back into the IngestHR originals, with L1 +
    VGG19 perceptual + vanilla GAN (U-Net discriminator with spectral norm)."""

    backbone = luigi.ChoiceParameter(choices=BACKBONES)
    degradation = luigi.ChoiceParameter(choices=DEGRADATIONS)
    iterations = luigi.OptionalIntParameter(default=None)
    milestones = luigi.OptionalListParameter(default=None)  # steps where the lr halves
    batch_size = luigi.OptionalIntParameter(default=None)
    crop = luigi.OptionalIntParameter(default=None)  # a multiple of 8 (the discriminator)
    lr = luigi.OptionalFloatParameter(default=None)
    rcan = luigi.OptionalDictParameter(default=None)  # models.rcan.RCAN arguments
    elan = luigi.OptionalDictParameter(default=None)  # models.elan.ELAN arguments
    discriminator = luigi.OptionalDictParameter(default=None)  # UNetDiscriminator arguments
    losses = luigi.OptionalDictParameter(default=None)  # weights: l1, perceptual, gan
    perceptual_layers = luigi.OptionalDictParameter(default=None)  # VGG19 conv -> weight
    # Not in the key: where the weights are (their sha256 is) and how often to checkpoint.
    vgg19_weights = luigi.OptionalParameter(default=None, significant=False)
    ckpt_every = luigi.OptionalIntParameter(default=None, significant=False)
    cached_images = luigi.OptionalIntParameter(default=None, significant=False)

    @property
    def version(self) -> int:  # type: ignore[override]
        """Per backbone. elan 2: its shifted windows no longer wrap around the image
        (models/elan.py). rcan's output did not change, so its trainings stay cached."""
        return 2 if self.backbone == "elan" else 1

    @property
    def variant(self) -> str:
        return self.backbone  # [<preset>.TrainEnhancer.<backbone>] settings come first

    @functools.cached_property
    def settings(self) -> dict:
        values = dict(Stage.settings.func(self))
        values.pop("elan" if self.backbone == "rcan" else "rcan")  # the other size is irrelevant
        return values

    @property
    def loss_weights(self) -> LossWeights:
        try:
            return LossWeights(**self.settings["losses"])
        except TypeError:
            raise ValueError(f"TrainEnhancer losses = {self.settings['losses']}: the keys are "
                             f"l1, perceptual and gan") from None

    @property
    def vgg19_path(self) -> Path | None:
        """The configured VGG19 file, or None when the perceptual term is off or not configured."""
        path = self.resolved("vgg19_weights")
        return Path(path) if path and self.loss_weights.perceptual > 0 else None

    def fingerprint(self) -> dict:
        if self.loss_weights.perceptual <= 0:
            return {}
        path = self.vgg19_path
        if path is None:
            return {"perceptual": "off: no vgg19_weights"}
        st = require_vgg19_file(path).stat()  # else MissingVGGWeights: the file, where to get it
        return {"vgg19_sha256": _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)}

    def requires(self):
        return {"hr": IngestHR(), "degraded": DegradeForEnhancer(degradation=self.degradation)}

    def load_generator(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The trained generator, in eval mode on `device`."""
        from pipeline.train import enhancer
        from pipeline.train.loop import load_checkpoint

        config = self.settings[self.backbone]
        model = enhancer.build_generator(self.backbone, config)
        weights = self.out_dir / GENERATOR_FILE
        try:
            model.load_state_dict(load_checkpoint(weights))
        except RuntimeError as e:
            raise ValueError(f"{weights}: does not fit {self.backbone} {config}: {e}") from None
        return model.to(device).eval()

    def _perceptual(self) -> tuple[PerceptualLoss | None, list[str]]:
        """(the VGG19 perceptual loss, or None when it is off or no VGG19 file is configured;
        the warnings for the manifest: NO_VGG_WARNING, also logged, in the second case)."""
        from pipeline.train.losses import PerceptualLoss, load_vgg19

        if self.vgg19_path is not None:
            layers = self.settings["perceptual_layers"]
            return PerceptualLoss(load_vgg19(self.vgg19_path), layers), []
        if self.loss_weights.perceptual > 0:
            log.warning("TrainEnhancer(%s, %s): %s", self.backbone, self.degradation,
                        NO_VGG_WARNING)
            return None, [NO_VGG_WARNING]
        return None, []

    def _pairs(self) -> tuple[int, Callable[[int], tuple[np.ndarray, np.ndarray]]]:
        """How many training pairs there are (every HR image with each of its degraded
        variants), and a cached reader of pair k: (clean, degraded), uint8 RGB HWC of one
        size."""
        hr_dir, lq_dir = self.input_dir("hr"), self.input_dir("degraded")
        variants = int(self.input_stages()["degraded"].settings["variants"])
        pairs = [(img.id, v) for img in read_images(hr_dir) for v in range(variants)]

        @functools.lru_cache(maxsize=self.resolved("cached_images"))
        def pair(k: int) -> tuple[np.ndarray, np.ndarray]:
            image_id, v = pairs[k]
            clean = read_rgb(image_path(hr_dir, image_id))
            path = image_path(lq_dir, f"{image_id}_{v}")
            degraded = read_rgb(path)
            if degraded.shape != clean.shape:
                raise ValueError(f"{path}: {degraded.shape[1]}x{degraded.shape[0]}, but its HR "
                                 f"image is {clean.shape[1]}x{clean.shape[0]}")
            return clean, degraded

        return len(pairs), pair

    def build(self, out: Path) -> dict:
        from pipeline.train import enhancer
        from pipeline.train.loop import cpu_state, parameter_count, save_checkpoint

        s, device = self.settings, self.device
        if s["crop"] % 8:
            raise ValueError(f"TrainEnhancer crop = {s['crop']}: must be a multiple of 8")
        count, pair = self._pairs()
        perceptual, warnings = self._perceptual()
        training = enhancer.build_training(
            self.backbone, s[self.backbone], s["discriminator"], perceptual, self.loss_weights,
            s["lr"], s["milestones"], self.seed_for("init"), device)

        def step(i: int) -> dict[str, float]:
            degraded, clean = enhancer.sample_batch(rng(self.key, "batch", i), pair, count,
                                                    s["batch_size"], s["crop"])
            return training.step(i, degraded.to(device), clean.to(device))

        name = f"TrainEnhancer {self.backbone}/{self.degradation}"
        rows = self.train(out, training, step, s["iterations"],
                          lambda: save_checkpoint(out / GENERATOR_FILE,
                                                  cpu_state(training.generator)),
                          name, desc=name)
        return {"pairs": count, "final": rows[-1] if rows else None,
                "parameters": parameter_count(training.generator),
                "perceptual": str(self.vgg19_path) if perceptual is not None else None,
                "warnings": warnings}
