"""The SR model behind SuperResolveGT: loading Real-ESRGAN-format RRDB weights, a tiny
offline training on LR/HR pairs (SRTraining), and super-resolving a GT and resizing it back.

How a variant at scale s is made with a model of native scale m (x4 for Real-ESRGAN x4plus
and for the offline model): the GT (H,W) is reflect-padded on the bottom and right to
(H',W'), the smallest multiples of q = a*m / gcd(a*m, s) (a: the model's input multiple, 1
for x4, 2 for x2), so that s/m times it is a whole number of pixels; it is resized to
(H'*s/m, W'*s/m) (cv2.INTER_AREA when shrinking, INTER_CUBIC when enlarging; untouched when
s == m); the model takes that to exactly s times the padded GT; and the result is brought
back by the mean of every s x s block (what cv2.INTER_AREA does for a whole factor), tile
by tile, then cropped to (H,W). So variant s is the model's idea of the GT's detail at s
times its resolution; running the x4 model once and resizing its output to s x GT instead
would make the three variants nearly the same image. Nothing of photo size exists in float
but the optional keep_low correction (one channel at a time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.rrdb import RRDBNet
from pipeline.image.conversions import to_uint8
from pipeline.image.degrade import Recipe, degrade
from pipeline.train.feed import AlignedCrops
from pipeline.train.loop import Training, descend, load_checkpoint, save_checkpoint
from pipeline.train.precision import FP32, Precision
from pipeline.train.tiling import tiled_apply

WRAPPERS = ("params_ema", "params")


def unwrap_state_dict(payload: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The state dict inside a Real-ESRGAN / BasicSR file: payload['params_ema'], else
    payload['params'], else the payload itself."""
    for key in WRAPPERS:
        if key in payload:
            return dict(payload[key])
    return dict(payload)


def rrdb_config(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """RRDBNet constructor arguments read from a state dict's key names and shapes."""
    try:
        first = state["conv_first.weight"]
        num_feat, in_ch = first.shape[0], first.shape[1]
        num_grow_ch = state["body.0.rdb1.conv1.weight"].shape[0]
        num_out_ch = state["conv_last.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not an RRDBNet (ESRGAN/Real-ESRGAN) state dict: no {e.args[0]!r}; "
                         f"keys start {sorted(state)[:5]}") from None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    unshuffle = {3: 1, 12: 2, 48: 4}.get(int(in_ch))
    if unshuffle is None:
        raise ValueError(f"conv_first takes {in_ch} channels: expected 3 (x4), 12 (x2) or 48 (x1)")
    return {"num_in_ch": 3, "num_out_ch": int(num_out_ch), "scale": 4 // unshuffle,
            "num_feat": int(num_feat), "num_block": len(blocks), "num_grow_ch": int(num_grow_ch)}


def load_rrdb(path: Path, device: torch.device | str = "cpu") -> RRDBNet:
    """An RRDBNet in eval mode with the weights of a Real-ESRGAN-format file (plain state dict,
    or wrapped in 'params_ema' / 'params'); its size and scale are read from the file.
    Loaded with torch.load(weights_only=True). Raises naming the file on any mismatch."""
    path = Path(path)
    state = unwrap_state_dict(load_checkpoint(path, "cpu"))
    try:
        model = RRDBNet(**rrdb_config(state))
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot load as an RRDBNet: {e}") from None
    return model.to(device).eval()


def save_rrdb(path: Path, model: RRDBNet) -> None:
    """Write the weights as Real-ESRGAN does ({'params': state_dict}), atomically."""
    save_checkpoint(path, {"params": {k: v.detach().cpu() for k, v in model.state_dict().items()}})


class SecondOrderCrops:
    """The SR sampler (pipeline.train.feed): aligned (LR, HR) crops, `crop` LR pixels, and with
    `recipes` the LR crop degraded once more by one of them, drawn per sample (Real-ESRGAN's
    second order). Returns [lr, hr], uint8 RGB HWC."""

    def __init__(self, crop: int, recipes: Sequence[Recipe] = ()):
        self.crops, self.recipes = AlignedCrops(crop), list(recipes)

    def __call__(self, draw: np.random.Generator,
                 images: Sequence[np.ndarray]) -> list[np.ndarray]:
        lr, hr = self.crops(draw, images)
        if self.recipes:
            lr = degrade(lr, self.recipes[int(draw.integers(len(self.recipes)))], draw)
        return [lr, hr]


def sr_train_step(model: RRDBNet, optimizer: torch.optim.Optimizer, lr: torch.Tensor,
                  hr: torch.Tensor, precision: Precision = FP32) -> float:
    """One L1 step (the Real-ESRNet objective) on an LR batch and its HR targets, the forward
    pass at `precision`; returns the loss."""
    model.train()
    loss = F.l1_loss(precision.forward(model, lr), hr)
    descend(optimizer, loss)
    return float(loss.detach())


class SRTraining(Training):
    """An RRDBNet and its Adam (betas 0.9/0.99, constant learning rate `lr`): `step(i, lr,
    hr)` is one L1 step (`sr_train_step`)."""

    def __init__(self, model: RRDBNet, lr: float):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))

    def parts(self) -> dict[str, Any]:
        return {"model": self.model, "opt": self.opt}

    def step(self, i: int, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """Update i on an LR batch and its HR targets; returns {"l1": loss}."""
        return {"l1": sr_train_step(self.model, self.opt, lr, hr, self.precision)}


def build_training(scale: int, config: Mapping[str, int], lr: float, seed: int,
                   device: torch.device | str = "cpu",
                   precision: Precision = FP32) -> SRTraining:
    """The training of an RRDBNet of `scale` and size `config` (num_feat, num_block,
    num_grow_ch), initialised from `seed` (same weights on every clean build), on `device`,
    forward passes at `precision`."""
    torch.manual_seed(seed)
    training = SRTraining(precision.prepare(RRDBNet(scale=scale, **config).to(device)), lr)
    training.precision = precision
    return training


def _padded(gt: np.ndarray, multiple: int) -> np.ndarray:
    h, w = gt.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return gt
    return cv2.copyMakeBorder(gt, 0, ph, 0, pw, cv2.BORDER_REFLECT_101
                              if ph < h and pw < w else cv2.BORDER_REPLICATE)


def keep_low_pass(variant: np.ndarray, gt: np.ndarray, sigma: float) -> np.ndarray:
    """`variant` with its Gaussian low-pass (sigma px) replaced by `gt`'s: uint8 RGB HWC,
    computed in float32 one channel at a time."""
    out = np.empty_like(variant)
    for c in range(3):
        v, g = variant[..., c].astype(np.float32), gt[..., c].astype(np.float32)
        v += cv2.GaussianBlur(g, (0, 0), sigma)
        v -= cv2.GaussianBlur(variant[..., c].astype(np.float32), (0, 0), sigma)
        out[..., c] = to_uint8(v)
    return out


def super_resolve(model: RRDBNet, gt: np.ndarray, scale: int, tile: int, overlap: int,
                  device: torch.device | str = "cpu", keep_low: float = 0.0,
                  precision: Precision = FP32, batch: int = 4) -> np.ndarray:
    """Variant `scale` of `gt` (uint8 RGB HWC): the model applied to the GT at `scale` times its
    resolution and brought back by s x s block means (see the module docstring). Tiled:
    `tile` input pixels per side with `overlap`, `batch` tiles per forward pass run by
    `precision` (pipeline.train.tiling.tiled_apply). With `keep_low` > 0 the variant's
    Gaussian low-pass (sigma `keep_low` px) is replaced by the GT's: an SR model's drift in
    tone or colour stays out, its detail stays in. Returns uint8 RGB HWC, GT size.
    """
    h, w = gt.shape[:2]
    m, align = model.scale, 4 // model.scale
    padded = _padded(gt, align * m // math.gcd(align * m, scale))
    hp, wp = padded.shape[:2]
    size = (wp * scale // m, hp * scale // m)
    x = padded if scale == m else cv2.resize(
        padded, size, interpolation=cv2.INTER_AREA if scale < m else cv2.INTER_CUBIC)
    model = precision.prepare(model.eval())
    back = tiled_apply(model, x, tile, overlap, precision, scale=m, reduce=scale, align=align,
                       batch=batch, device=device)[:h, :w]
    return keep_low_pass(back, gt, keep_low) if keep_low > 0 else np.ascontiguousarray(back)
