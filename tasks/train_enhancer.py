"""TrainEnhancer(backbone, degradation): one of HGGT's four 1x enhancers (docs/ENHANCERS.md).

Output: generator.pt (the generator's plain state dict; its size is this stage's `rcan` or
`elan` setting), curve.csv and curve.png.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import luigi

from pipeline.store.durable import sha256_file
from pipeline.store.imageio import image_path, read_rgb
from pipeline.train.loss_settings import LossWeights, require_vgg19_file
from tasks.base import Stage
from tasks.degrade import load_recipe
from tasks.ingest import IngestHR
from tasks.training import TrainingStage, training_inputs

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
    """Train the `backbone` generator (RCAN or ELAN, no upsampler) to turn crops of the IngestHR
    originals, each degraded afresh with the [degradation.<degradation>] recipe
    (pipeline.train.enhancer.DegradedPairs), back into them, with L1 + VGG19 perceptual +
    vanilla GAN (U-Net discriminator with spectral norm)."""

    version = 3  # 2: a fresh degradation per sample; 3: ELAN's shifts no longer wrap
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

    def _vgg_facts(self) -> dict:
        if self.loss_weights.perceptual <= 0:
            return {}
        path = self.vgg19_path
        if path is None:
            return {"perceptual": "off: no vgg19_weights"}
        st = require_vgg19_file(path).stat()  # else MissingVGGWeights: the file, where to get it
        return {"vgg19_sha256": _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)}

    def requires(self):
        return training_inputs(lambda chunk: {"hr": IngestHR(chunk=chunk)})

    def fingerprint(self) -> dict:
        # The recipe's values decide the training pairs, not the section's name.
        return {"recipe_values": load_recipe(self.degradation).asdict(), **self._vgg_facts()}

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

    def build(self, out: Path) -> dict:
        from pipeline.train import enhancer
        from pipeline.train.feed import CropBatches
        from pipeline.train.loop import cpu_state, parameter_count, save_checkpoint

        s, device = self.settings, self.device
        if s["crop"] % 8:
            raise ValueError(f"TrainEnhancer crop = {s['crop']}: must be a multiple of 8")
        photos = self.training_photos("hr")
        ids = [img.id for img, _ in photos]
        store = self.array_store(out, {
            img.id: functools.partial(read_rgb, image_path(dirs["hr"], img.id))
            for img, dirs in photos})
        pairs = enhancer.DegradedPairs(s["crop"], load_recipe(self.degradation))
        feed = self.feed(CropBatches(store, [[i] for i in ids], pairs, s["batch_size"],
                                     self.seed_for("batch")), s["iterations"])
        perceptual, warnings = self._perceptual()
        training = enhancer.build_training(
            self.backbone, s[self.backbone], s["discriminator"], perceptual, self.loss_weights,
            s["lr"], s["milestones"], self.seed_for("init"), device, self.network_precision)

        def step(i: int) -> dict[str, float]:
            degraded, clean = feed(i)
            return training.step(i, degraded.to(device), clean.to(device))

        name = f"TrainEnhancer {self.backbone}/{self.degradation}"
        rows = self.train(out, training, step, s["iterations"],
                          lambda: save_checkpoint(out / GENERATOR_FILE,
                                                  cpu_state(training.generator)),
                          name, desc=name)
        return {"images": len(ids), "final": rows[-1] if rows else None,
                "parameters": parameter_count(training.generator),
                "perceptual": str(self.vgg19_path) if perceptual is not None else None,
                "warnings": warnings}
