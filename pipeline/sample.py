"""The embedded sample corpus: real photographs that scikit-image ships."""

from __future__ import annotations

import shutil
from pathlib import Path

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
