"""The embedded sample corpus (real photographs that scikit-image ships), and the quality
benchmark's set made from it: clean references and imperfect GTs."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from pipeline.image.conversions import to_uint8
from pipeline.image.degrade import jpeg
from pipeline.store.imageio import read_rgb, write_rgb
from pipeline.store.seeding import rng

SAMPLE_FILES = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "rocket.jpg",
)


def copy_sample_corpus(dest: Path) -> list[Path]:
    """Copy the sample photographs into `dest` (created if missing); returns the copies."""
    import skimage.data

    source = Path(skimage.data.__file__).parent
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in SAMPLE_FILES:
        target = dest / name
        if not target.exists():
            shutil.copyfile(source / name, target)
        copies.append(target)
    return copies


# The residual degradations of the quality benchmark's imperfect GTs (docs/QUALITY.md): what a
# photographed GT still carries. Blur sigma in pixels, noise sigma on 0-255, JPEG quality.
IMPERFECTIONS = {"blur": {"blur": (0.8, 1.3), "noise": (2.0, 2.0), "jpeg": 90},
                 "noise": {"blur": (0.4, 0.4), "noise": (5.0, 8.0), "jpeg": 90}}


def imperfect(clean: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """An imperfect GT made from a clean uint8 RGB photo: Gaussian blur, Gaussian noise and a
    JPEG round trip with the `kind` ranges of IMPERFECTIONS (blur-led or noise-led)."""
    spec = IMPERFECTIONS[kind]
    x = cv2.GaussianBlur(clean.astype(np.float32), (0, 0), rng.uniform(*spec["blur"]))
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(*spec["noise"]))
    return jpeg(to_uint8(x), spec["jpeg"])


def write_unless_same(path: Path, rgb: np.ndarray) -> None:
    """write_rgb, unless `path` already holds exactly these pixels."""
    if not (path.exists() and np.array_equal(read_rgb(path), rgb)):
        write_rgb(path, rgb)


def make_quality_corpus(dest: Path, seed: int = 0) -> dict[str, str]:
    """The quality benchmark's set: dest/clean/<name>.png (the sample photographs, RGB) and
    dest/imperfect/<name>.png (each made imperfect, blur-led and noise-led in turn by name
    order, seeded by `seed`). The build sees only dest/imperfect; a file already holding the
    same pixels is left alone, so its mtime, and with it the build's cache keys, survive a
    rerun. Returns {name: kind}."""
    from PIL import Image

    dest = Path(dest)
    (dest / "clean").mkdir(parents=True, exist_ok=True)
    (dest / "imperfect").mkdir(exist_ok=True)
    photos = copy_sample_corpus(dest / "photos")
    kinds = {}
    for i, path in enumerate(sorted(photos)):
        clean = np.asarray(Image.open(path).convert("RGB"))
        kind = ("blur", "noise")[i % 2]
        name = f"{path.stem}.png"
        write_unless_same(dest / "clean" / name, clean)
        write_unless_same(dest / "imperfect" / name, imperfect(clean, kind, rng(seed, path.name)))
        kinds[name] = kind
    shutil.rmtree(dest / "photos")
    return kinds
