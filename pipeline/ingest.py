"""Decoding and validating HR photos: EXIF orientation, 8-bit RGB, reasons for rejects."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGES_JSON = "images.json"
REJECTS_JSON = "rejects.json"


class Rejected(ValueError):
    """The file cannot be used; the message is the reason shown to the user."""


@dataclass(frozen=True)
class HRImage:
    id: str
    source: str
    width: int
    height: int
    sha256: str


def list_inputs(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, skipping hidden names (dotfiles)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".")
                                             for part in p.relative_to(folder).parts))


def folder_fingerprint(folder: Path) -> list[list]:
    """(relative path, size, mtime) of every input: changes when a photo is added or edited."""
    rows = []
    for p in list_inputs(folder):
        st = p.stat()
        rows.append([os.fsdecode(p.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return rows


def _to_rgb(img: Image.Image, alpha: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise Rejected(f"floating-point image mode {img.mode!r} is not supported")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        if alpha == "reject":
            raise Rejected("image has an alpha channel (IngestHR alpha = reject)")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_hr(path: Path, min_side: int, max_pixels: int, alpha: str = "composite") -> np.ndarray:
    """Decode one photo to uint8 RGB HWC, upright by its EXIF orientation.

    Raises Rejected with the reason when the file is not an image, is truncated or corrupt,
    is smaller than `min_side` on its short side, or has more than `max_pixels` pixels
    (checked from the header, before decoding, against decompression bombs).
    """
    if Path(path).stat().st_size == 0:
        raise Rejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise Rejected(f"{w}x{h} = {w * h} pixels is above max_pixels={max_pixels}")
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img, alpha)
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not an image (no decoder recognises it)") from None
    except Image.DecompressionBombError as e:
        raise Rejected(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise Rejected(f"corrupt or truncated image: {e}") from None
    if min(rgb.shape[:2]) < min_side:
        raise Rejected(f"{rgb.shape[1]}x{rgb.shape[0]} is smaller than min_side={min_side}")
    return rgb


def content_id(path: Path) -> tuple[str, str]:
    """(image id, sha256) of a file: the id is the first 16 hex digits of its sha256."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return digest[:16], digest


def read_images(stage_dir: Path) -> list[HRImage]:
    """The accepted images listed by an IngestHR output folder."""
    rows = json.loads((Path(stage_dir) / IMAGES_JSON).read_text())
    return [HRImage(**row) for row in rows]


def read_rejects(stage_dir: Path) -> list[dict]:
    """[{"source": path, "reason": text}, ...] from an IngestHR output folder."""
    return json.loads((Path(stage_dir) / REJECTS_JSON).read_text())
