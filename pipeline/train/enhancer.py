"""HGGT's 1x enhancers: building a backbone by name, the GAN training step, and applying a
trained generator to a whole image.

One training step (the Real-ESRGAN order): the generator takes a batch of degraded crops and is
updated with L1 + perceptual + GAN against the clean crops while the discriminator is frozen;
then the discriminator is updated on the clean crops (real) and the detached outputs (fake).
Both use Adam; the learning rate is halved at every milestone, computed from the step index
(nothing to restore on resume but the optimiser states).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.elan import ELAN
from models.rcan import RCAN
from models.unet_discriminator import UNetDiscriminator
from pipeline.image.degrade import Recipe, apply
from pipeline.image.degrade import draw as draw_choice
from pipeline.train.feed import AlignedCrops
from pipeline.train.loop import Training, descend
from pipeline.train.loss_settings import LossWeights
from pipeline.train.losses import PerceptualLoss, gan_loss
from pipeline.train.precision import FP32, Precision
from pipeline.train.schedules import learning_rate
from pipeline.train.tiling import tiled_apply

GENERATORS: dict[str, Callable[..., nn.Module]] = {"rcan": RCAN, "elan": ELAN}


def build_generator(backbone: str, config: Mapping[str, Any]) -> nn.Module:
    """The backbone `backbone` ('rcan' or 'elan') built with the keyword arguments `config`."""
    if backbone not in GENERATORS:
        raise ValueError(f"unknown enhancer backbone {backbone!r} (known: {sorted(GENERATORS)})")
    try:
        return GENERATORS[backbone](**config)
    except TypeError as e:
        raise ValueError(f"bad {backbone} configuration {dict(config)}: {e}") from None


class DegradedPairs:
    """The enhancers' sampler (pipeline.train.feed): a crop of the clean image with a fresh
    Eq. 1 degradation drawn from `recipe` for every sample, as HGGT trains. The degradation
    runs on the crop plus a `margin` on every side (the blur kernel's reach), which is then cut
    away from both. Returns [degraded, clean], uint8 RGB HWC of `crop` pixels."""

    def __init__(self, crop: int, recipe: Recipe, margin: int = 8):
        if recipe.final_scale != 1:
            raise ValueError(f"an enhancer recipe keeps the size (final_scale = 1), not "
                             f"{recipe.final_scale}")
        self.region, self.recipe, self.margin = AlignedCrops(crop + 2 * margin), recipe, margin

    def __call__(self, draw: np.random.Generator,
                 images: Sequence[np.ndarray]) -> list[np.ndarray]:
        (clean,) = self.region(draw, images)
        degraded = apply(clean, draw_choice(self.recipe, draw), draw)
        inner = np.s_[self.margin:-self.margin, self.margin:-self.margin]
        return [np.ascontiguousarray(degraded[inner]), np.ascontiguousarray(clean[inner])]


class EnhancerTraining(Training):
    """A generator, a discriminator, their Adam optimisers and the loss weights.

    `step(i, degraded, clean)` runs one generator and one discriminator update on float [0,1]
    NCHW batches and returns the losses as floats. `state_dict()` / `load_state_dict()` hold
    everything a resumed run needs (both networks and both optimisers; the learning rate
    follows from the step). With `weights.gan == 0` the discriminator is not used; with
    `perceptual=None` the perceptual term is left out.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 perceptual: PerceptualLoss | None, weights: LossWeights, lr: float = 1e-4,
                 milestones: Sequence[int] = (200_000,), betas: tuple[float, float] = (0.9, 0.99)):
        self.generator, self.discriminator, self.perceptual = generator, discriminator, perceptual
        self.weights, self.lr, self.milestones = weights, lr, tuple(milestones)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)

    def step(self, i: int, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
        """Update i on one batch; returns the losses as floats (l1, and perceptual, g_gan,
        d_real, d_fake where those terms are on)."""
        lr = learning_rate(self.lr, i, self.milestones)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        use_gan = self.weights.gan > 0
        self.generator.train()
        self.discriminator.train().requires_grad_(False)
        run = self.precision.forward
        out = run(self.generator, degraded)
        l1 = F.l1_loss(out, clean)
        losses = {"l1": l1}
        total = self.weights.l1 * l1
        if self.perceptual is not None and self.weights.perceptual > 0:
            losses["perceptual"] = run(self.perceptual, out, clean)
            total = total + self.weights.perceptual * losses["perceptual"]
        if use_gan:
            losses["g_gan"] = gan_loss(run(self.discriminator, out), real=True)
            total = total + self.weights.gan * losses["g_gan"]
        descend(self.opt_g, total)
        if use_gan:
            self.discriminator.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            losses["d_real"] = gan_loss(run(self.discriminator, clean), real=True)
            losses["d_real"].backward()
            losses["d_fake"] = gan_loss(run(self.discriminator, out.detach()), real=False)
            losses["d_fake"].backward()
            self.opt_d.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def parts(self) -> dict[str, Any]:
        return {"generator": self.generator, "discriminator": self.discriminator,
                "opt_g": self.opt_g, "opt_d": self.opt_d}


def build_training(backbone: str, generator_config: Mapping[str, Any],
                   discriminator_config: Mapping[str, Any], perceptual: PerceptualLoss | None,
                   weights: LossWeights, lr: float, milestones: Sequence[int],
                   seed: int, device: torch.device | str = "cpu",
                   precision: Precision = FP32) -> EnhancerTraining:
    """The training of a `backbone` enhancer: generator and discriminator initialised from
    `seed` (so two runs start identically), on `device`, with their optimisers; forward
    passes run at `precision`."""
    torch.manual_seed(seed)
    generator = precision.prepare(build_generator(backbone, generator_config).to(device))
    discriminator = precision.prepare(UNetDiscriminator(**discriminator_config).to(device))
    if perceptual is not None:
        perceptual = precision.prepare(perceptual.to(device))
    training = EnhancerTraining(generator, discriminator, perceptual, weights, lr, milestones)
    training.precision = precision
    return training


@torch.no_grad()
def enhance(model: nn.Module, rgb: np.ndarray, tile: int, overlap: int,
            device: torch.device | str = "cpu", precision: Precision = FP32,
            batch: int = 4) -> np.ndarray:
    """Apply a 1x generator to uint8 RGB HWC `rgb` in overlapping tiles of `tile` pixels,
    `batch` tiles per forward pass run by `precision` (pipeline.train.tiling.tiled_apply;
    ELAN's tiles start on its window grid). Returns uint8 RGB HWC of the same size (clipped,
    rounded), written tile by tile."""
    model = precision.prepare(model.eval())
    return tiled_apply(model, rgb, tile, overlap, precision, batch=batch, device=device)
