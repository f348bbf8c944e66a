"""Reading and writing the uint8 RGB HWC images that stages exchange."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.store import durable


def read_rgb(path: Path) -> np.ndarray:
    """Read an image that a gtforge stage wrote: uint8 RGB HWC."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{path}: cannot decode image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_rgb(path: Path, rgb: np.ndarray, compression: int = 1) -> None:
    """Write uint8 RGB HWC as PNG (lossless; level 1 favours speed over size), atomically."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: expected uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    durable.write_bytes(path, buf.tobytes(), sync=False)  # cache.publish syncs stage folders


def image_path(stage_dir: Path, image_id: str) -> Path:
    """Where an image-set stage keeps image `image_id`."""
    return Path(stage_dir) / "images" / f"{image_id}.png"
