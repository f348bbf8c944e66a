"""Does the data help? Train one small SR network per target on a shard set's (lq, target)
pairs and measure it on held-out photos against their clean references.

Targets: "original" (the photographed GT), "hggt" (HGGT's rule: a random Positive candidate
per draw, the original when there is none), any candidate name (e.g. "fused"), and "clean" (the
clean reference itself, when references are given: the ceiling no GT enhancement can pass).
Every target gets the same network, steps, batches and seeds; only the target images differ.
Held-out photos (their samples never train) are degraded to LR with the shard set's own
DegradeLR recipe (several random draws each), super-resolved whole and compared with their
references (PSNR, SSIM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from models.small_sr import SmallSR
from pipeline.image import degrade
from pipeline.image.conversions import to_images, to_tensor
from pipeline.store.seeding import rng
from pipeline.train.feed import AlignedCrops
from pipeline.train.loop import descend


@dataclass
class Samples:
    """In-memory training samples: lq (N,h,w,3), original (N,H,W,3), candidates (N,K,H,W,3),
    labels (N,K), clean (N,H,W,3) or None; `names` the candidates."""

    lq: np.ndarray
    original: np.ndarray
    candidates: np.ndarray
    labels: np.ndarray
    clean: np.ndarray | None
    names: list[str]

    def target(self, name: str, rows: np.ndarray, draw: np.random.Generator) -> np.ndarray:
        """The `name` target of samples `rows`: uint8 (n,H,W,3)."""
        if name == "original":
            return self.original[rows]
        if name == "clean":
            if self.clean is None:
                raise ValueError("target 'clean' needs clean references")
            return self.clean[rows]
        if name == "hggt":
            out = self.original[rows].copy()
            for i, r in enumerate(rows):
                positives = np.flatnonzero(self.labels[r] == 1)
                if len(positives):
                    out[i] = self.candidates[r, positives[draw.integers(len(positives))]]
            return out
        if name not in self.names:
            raise ValueError(f"unknown target {name!r}: original, hggt, clean or one of "
                             f"{self.names}")
        return self.candidates[rows, self.names.index(name)]


def batch_of(samples: Samples, target: str, crops: AlignedCrops, seed: int, step: int,
             batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `step` of the `target` training: aligned (LR, target) crops, float32 [0,1]
    (B,3,h,w) and (B,3,h*scale,w*scale). Sample j draws from rng(seed, step, j) and the hggt
    target's pick from its own generator, so every target gets the same crops."""
    lqs, hrs = [], []
    for j in range(batch):
        draw = rng(seed, step, j)
        i = int(draw.integers(len(samples.lq)))
        goal = samples.target(target, np.array([i]), rng(seed, "pick", step, j))[0]
        lq, hr = crops(draw, [samples.lq[i], goal])
        lqs.append(lq)
        hrs.append(hr)
    return to_tensor(np.stack(lqs)), to_tensor(np.stack(hrs))


# The training losses: L1 (SR practice) or MSE (the loss whose optimum is PSNR's).
LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def train(samples: Samples, target: str, seed: int, steps: int, scale: int,
          batch: int = 16, crop: int = 24, lr: float = 1e-3, loss: str = "l1",
          device: torch.device | str = "cpu") -> SmallSR:
    """A SmallSR trained with `loss` (a LOSSES key) towards `target` (AdamW, cosine schedule),
    seeded by `seed` alone: the same seed gives the same initialisation and crops for every
    target."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: one of {sorted(LOSSES)}")
    torch.manual_seed(seed)
    model = SmallSR(scale=scale).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    crops = AlignedCrops(crop)
    for step in range(steps):
        lq, hr = batch_of(samples, target, crops, seed, step, batch)
        descend(opt, LOSSES[loss](model(lq.to(device)), hr.to(device)))
        sched.step()
    return model.eval()


def heldout_lr(image: np.ndarray, recipe: degrade.Recipe, seed: object) -> np.ndarray:
    """The LR input of a held-out photo: the shard set's DegradeLR recipe, seeded by `seed`."""
    return degrade.degrade(image, recipe, rng("heldout", seed))


@dataclass
class HeldOut:
    """A held-out photo: its source path (relative to the input folder), clean reference uint8
    (H,W,3) and LR draws (each (h,w,3))."""

    name: str
    clean: np.ndarray
    lrs: list[np.ndarray]


@torch.no_grad()
def measure(model: SmallSR, photos: Sequence[HeldOut],
            device: torch.device | str = "cpu") -> dict:
    """PSNR (dB) and SSIM of model(lr) against the clean reference (cropped to the output
    size): {"psnr", "ssim": the mean over photos, "photos": {name: {"psnr", "ssim"}}}, a
    photo's figures the mean over its LR draws."""
    per_photo = {}
    for photo in photos:
        psnr, ssim = [], []
        for lr in photo.lrs:
            out = to_images(model(to_tensor(lr, device))[0])
            ref = photo.clean[:out.shape[0], :out.shape[1]]
            psnr.append(peak_signal_noise_ratio(ref, out, data_range=255))
            ssim.append(structural_similarity(ref, out, channel_axis=2, data_range=255))
        per_photo[photo.name] = {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}
    means = {m: float(np.mean([r[m] for r in per_photo.values()])) for m in ("psnr", "ssim")}
    return {**means, "photos": per_photo}


def compare(results: Mapping[str, Sequence[Mapping[str, float]]]) -> dict:
    """Per target over seeds: mean and std of PSNR and SSIM; the gain over "original" (mean,
    min and max over seeds, same seed paired); and the share of the "clean" ceiling's gain
    that the target recovers (when both are present)."""
    table = {}
    base = results.get("original")
    ceiling = results.get("clean")
    for name, runs in results.items():
        row = {}
        for m in ("psnr", "ssim"):
            values = np.array([r[m] for r in runs])
            row[m] = {"mean": round(float(values.mean()), 4),
                      "std": round(float(values.std()), 4)}
            if base is not None and name != "original":
                gain = values - np.array([r[m] for r in base])
                row[m]["gain_over_original"] = {"mean": round(float(gain.mean()), 4),
                                                "min": round(float(gain.min()), 4),
                                                "max": round(float(gain.max()), 4)}
                if ceiling is not None and name != "clean":
                    top = np.array([r[m] for r in ceiling]) - np.array([r[m] for r in base])
                    if top.mean() > 0:
                        row[m]["share_of_ceiling"] = round(float(gain.mean() / top.mean()), 3)
        table[name] = row
    return table


def photo_gains(results: Mapping[str, Sequence[Mapping]]) -> dict[str, dict[str, float]]:
    """{photo: {target: mean PSNR gain (dB) over "original"}} over the runs that held the photo
    out (same run index paired, as in `compare`); needs the runs' per-photo figures."""
    base = results["original"]
    gains: dict[str, dict[str, list[float]]] = {}
    for name, runs in results.items():
        if name == "original":
            continue
        for run, ref in zip(runs, base, strict=True):
            for photo, figures in run["photos"].items():
                delta = figures["psnr"] - ref["photos"][photo]["psnr"]
                gains.setdefault(photo, {}).setdefault(name, []).append(delta)
    return {photo: {name: round(float(np.mean(v)), 4) for name, v in row.items()}
            for photo, row in sorted(gains.items())}
