"""Conversions between the uint8 RGB HWC images stages exchange and the float tensors models
take. One place for them, one contract each. torch is imported by the tensor conversions when
they run, so the numpy stages (degradation, ingest) load without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB (N,H,W,3) or (H,W,3) -> float32 [0,1] (N,3,H,W) on `device`."""
    import torch

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1] != 3 or images.ndim not in (3, 4):
        raise ValueError(f"expected uint8 RGB HWC or NHWC, got {images.dtype} {images.shape}")
    if images.ndim == 3:
        images = images[None]
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)


def to_images(tensor: torch.Tensor) -> np.ndarray:
    """float [0,1] (N,3,H,W) -> uint8 RGB (N,H,W,3), or (3,H,W) -> (H,W,3); clipped and
    rounded, on the CPU."""
    x = tensor.detach().float().clamp(0, 1).mul(255).round().byte()
    return x.movedim(-3, -1).cpu().numpy()


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clip a float image on the 0-255 scale to uint8 (one pass each)."""
    return cv2.convertScaleAbs(np.maximum(x, 0.0))  # saturating round to nearest
