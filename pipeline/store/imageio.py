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


def read_rgb_sized(path: Path, shape: tuple[int, ...], of: str) -> np.ndarray:
    """read_rgb of an image that must have `shape` (that of `of`, e.g. "its HR image");
    ValueError naming the file and both sizes otherwise."""
    rgb = read_rgb(path)
    if rgb.shape != tuple(shape):
        raise ValueError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]}, but {of} is "
                         f"{shape[1]}x{shape[0]}")
    return rgb


def encode_png(image: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes of a uint8 RGB HWC (or HW grey) image; lossless, level 1 favours speed over
    size. ValueError for another dtype or shape."""
    if image.dtype != np.uint8 or not (image.ndim == 2 or image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"expected uint8 HxWx3 or HxW, got {image.dtype} {image.shape}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_rgb(path: Path, rgb: np.ndarray, compression: int = 1) -> None:
    """Write uint8 RGB HWC as PNG (`encode_png`), atomically."""
    if rgb.ndim != 3:
        raise ValueError(f"{path}: expected uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    try:
        data = encode_png(rgb, compression)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    durable.write_bytes(Path(path), data, sync=False)  # cache.publish syncs stage folders


def image_path(stage_dir: Path, image_id: str) -> Path:
    """Where an image-set stage keeps image `image_id`."""
    return Path(stage_dir) / "images" / f"{image_id}.png"
