"""Training the CFMG: crops of aligned [GT, SR x2, SR x3, SR x4], the conditional objective

    loss = (1 - c^2) * MSE(fused, GT) - c^2 * P(fused),   c ~ U(0,1) once per step,

with the MSE taken on [-1, 1] images, as BGT's code does (4x the MSE on [0, 1]), P a weighted
sum of differentiable quality scores on [0, 1] images (pyiqa metrics with `as_loss=True`, or
"restore": closeness to a cleaner crop the GT was made from, for which the CFMG trains on
`restoration_item`s), and AdamW with a warm-up + cosine schedule and gradient clipping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.cfmg import CFMG
from pipeline.image.conversions import to_tensor
from pipeline.image.fusion import fuse_logits, fuse_photo
from pipeline.quality.judge import VersionRanges, degraded
from pipeline.train.judge import crop_bases
from pipeline.train.loop import Training, descend
from pipeline.train.precision import FP32, Precision
from pipeline.train.schedules import warmup_cosine

MetricFactory = Callable[..., Callable[[torch.Tensor], torch.Tensor]]
RESTORE = "restore"  # the prior that needs clean crops (the CFMG trains on restoration_items)


class Perceptual:
    """P(fused) = sum_m weight_m * score_m, a differentiable quality prior (higher is
    better). A pyiqa metric is created by `factory(name, device, as_loss=True)`
    (pipeline.quality.iqa.create_metric) and scores the fused image alone; "restore" is
    -MSE(fused, clean) on [-1, 1], how close the fused image is to the cleaner crop its GT was
    made from (`clean`, given with every batch). A lower-better metric (NIQE) needs a negative
    weight, a higher-better one a positive weight, so that a larger P is always better."""

    def __init__(self, weights: Mapping[str, float], device: torch.device | str,
                 factory: MetricFactory):
        if not weights:
            raise ValueError("TrainMaskGenerator metrics: give at least one {name: weight}")
        self.terms = []
        for name, weight in weights.items():
            if name == RESTORE:
                metric, lower_better = _closeness, False
            else:
                metric = factory(name, device, as_loss=True)
                lower_better = bool(getattr(metric, "lower_better", False))
            if weight == 0 or (weight > 0) == lower_better:
                better = "lower" if lower_better else "higher"
                raise ValueError(f"IQA metric {name!r} is {better}-better: its weight must be "
                                 f"{'negative' if lower_better else 'positive'}, got {weight}")
            self.terms.append((name, float(weight), metric))

    def __call__(self, images: torch.Tensor,
                 clean: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(P as a differentiable scalar, {metric name: raw batch-mean score}) for images and
        (for "restore") the clean crops their GTs were made from, float [0,1] NCHW."""
        total, raw = images.new_zeros(()), {}
        for name, weight, metric in self.terms:
            if name == RESTORE and clean is None:
                raise ValueError("the restore prior needs the clean crops of the batch")
            score = (metric(images, clean) if name == RESTORE else metric(images)).mean()
            raw[name] = float(score.detach())
            total = total + weight * score.to(images.dtype)
        return total, raw


def _closeness(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """-MSE on [-1, 1] (as the fidelity term) per image: (B,)."""
    return -4.0 * (images - clean).pow(2).flatten(1).mean(1)


def cfmg_loss(model: CFMG, sources: torch.Tensor, c: float, perceptual: Perceptual,
              precision: Precision = FP32,
              clean: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on one batch: sources (B,S,3,h,w) in [0,1], source 0 the GT, and for the
    restore prior the clean crops (B,3,h,w) the GTs were made from; returns (loss, {loss,
    mse (on [-1,1]), P, c, metric scores}). P sees the fused image clipped to [0,1]. The CFMG
    runs at `precision`; the fusion, MSE and P in float32."""
    gt = sources[:, 0]
    logits = precision.forward(model, gt, torch.full((len(gt),), c, device=gt.device))
    fused = fuse_logits(sources, logits)
    mse = 4.0 * F.mse_loss(fused, gt)  # on [-1, 1], as BGT
    p, raw = perceptual(fused.clamp(0, 1), clean)
    loss = (1 - c * c) * mse - c * c * p
    return loss, {"loss": float(loss.detach()), "mse": float(mse.detach()),
                  "P": float(p.detach()), "c": c, **raw}


def train_step(model: CFMG, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, sources: torch.Tensor,
               c: float, perceptual: Perceptual, grad_clip: float,
               precision: Precision = FP32, clean: torch.Tensor | None = None
               ) -> dict[str, float]:
    """One optimiser step on `cfmg_loss` with gradient-norm clipping; returns the logged values."""
    model.train()
    loss, logs = cfmg_loss(model, sources, c, perceptual, precision, clean)
    descend(optimizer, loss, clip=(model.parameters(), grad_clip))
    scheduler.step()
    return logs


class CFMGTraining(Training):
    """A CFMG, its AdamW with the warm-up/cosine schedule, the prior P (`Perceptual`) and the
    gradient-norm clip: `step(i, sources, c)` is one `train_step`."""

    def __init__(self, model: CFMG, perceptual: Perceptual, lr: float, weight_decay: float,
                 warmup: int, total: int, grad_clip: float):
        self.model, self.perceptual, self.grad_clip = model, perceptual, grad_clip
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = warmup_cosine(self.opt, warmup, total)

    def parts(self) -> dict[str, Any]:
        return {"model": self.model, "opt": self.opt, "sched": self.sched}

    def step(self, i: int, sources: torch.Tensor, c: float,
             clean: torch.Tensor | None = None) -> dict[str, float]:
        """Update i on aligned crops (B,S,3,h,w) in [0,1] (source 0 the GT) at condition `c`,
        with the clean crops (B,3,h,w) for the restore prior; returns the logged values of
        `cfmg_loss`."""
        return train_step(self.model, self.opt, self.sched, sources, c, self.perceptual,
                          self.grad_clip, self.precision, clean)


def build_training(sources: int, config: Mapping[str, Any], perceptual: Perceptual, *,
                   lr: float, weight_decay: float, warmup: int, total: int, grad_clip: float,
                   seed: int, device: torch.device | str = "cpu",
                   precision: Precision = FP32) -> CFMGTraining:
    """The training of a CFMG fusing `sources` images, of size `config` (width, stages, bins,
    ...), initialised from `seed` (same weights on every clean build), on `device`, for `total`
    steps, forward passes at `precision`."""
    torch.manual_seed(seed)
    model = precision.prepare(CFMG(sources=sources, **config).to(device))
    training = CFMGTraining(model, perceptual, lr, weight_decay, warmup, total, grad_clip)
    training.precision = precision
    return training


def restoration_item(images: Sequence[np.ndarray], side: int, border: int,
                     shrink: tuple[float, float], ranges: VersionRanges,
                     variants: Callable[[np.ndarray], list[np.ndarray]],
                     draw: np.random.Generator) -> np.ndarray:
    """One training item of the restore prior, all drawn from `draw`: a *clean* crop (a random
    corpus crop shrunk by f ~ U[shrink], so cleaner than the photos), a GT-like *input* made
    from it by pipeline.quality.judge.degraded within `ranges`, and the input's SR variants
    (`variants(input)`, each at the input's size). uint8 (2 + variants, side, side, 3) in the
    order [input, *variants, clean], without a `border` on each side (where the SR model saw
    the crop's edge)."""
    clean = crop_bases(images, 1, side + 2 * border, shrink, draw)[0]
    given = degraded(clean, ranges, draw)
    inner = slice(border, border + side)
    return np.stack([given, *variants(given), clean])[:, inner, inner]


@torch.no_grad()
def predict_logits(model: CFMG, gt: torch.Tensor, c: float) -> torch.Tensor:
    """Ring weights (B,S,bins) for GT images (B,3,H,W) in [0,1] at condition c (eval mode)."""
    model.eval()
    return model(gt, torch.full((len(gt),), float(c), device=gt.device))


def view_starts(length: int, crop: int, views: int) -> list[int]:
    """`views` evenly spaced starts of crop-long windows along an axis (fewer when they would
    repeat; one when the axis is no longer than the crop)."""
    if length <= crop:
        return [0]
    return sorted({round(i * (length - crop) / max(views - 1, 1)) for i in range(views)})


@torch.no_grad()
def predict_photo(model: CFMG, gt: np.ndarray, c: float, crop: int, views: int = 4,
                  device: torch.device | str = "cpu", precision: Precision = FP32,
                  batch: int = 8) -> torch.Tensor:
    """Ring weights (1,S,bins) for a whole photo, uint8 RGB HWC, from views of the size it was
    trained on: the mean of the CFMG's outputs on a views x views grid of crop x crop windows
    at the photo's own resolution (so a ring's normalised frequency means what it meant on the
    training crops and what it means on the photo's FFT; a downscaled view would move every
    ring by the downscale factor), `batch` windows per forward pass. A photo smaller than
    the crop is seen whole."""
    model.eval()
    h, w = gt.shape[:2]
    boxes = [(y, x) for y in view_starts(h, crop, views) for x in view_starts(w, crop, views)]
    total = None
    for i in range(0, len(boxes), batch):
        crops = np.stack([gt[y:y + crop, x:x + crop] for y, x in boxes[i:i + batch]])
        x = to_tensor(crops, device)
        out = precision.forward(model, x, torch.full((len(x),), float(c), device=device))
        total = out.sum(0, keepdim=True) if total is None else total + out.sum(0, keepdim=True)
    return total / len(boxes)


def fuse_crops(model: CFMG, crops: np.ndarray, variants: np.ndarray, c: float, crop: int,
               device: torch.device | str = "cpu") -> np.ndarray:
    """The fused GT of every crop of uint8 (N,h,w,3) with its SR variants (N,K,h,w,3, the
    sources' order) by the CFMG's masks at condition c, as FuseGT fuses a photo
    (`predict_photo` with the training `crop`, `fuse_photo`): a version generator's output
    (pipeline.train.judge). Returns uint8 (N,h,w,3)."""
    return np.stack([fuse_photo([x, *v], predict_photo(model, x, c, crop, device=device).cpu())
                     for x, v in zip(crops, variants, strict=True)])
