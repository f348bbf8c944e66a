"""Write a small format-v1 shard set straight from photos, without running the pipeline.

For trying the readers, the BasicSR adapter and the reference trainer in seconds (and for the
tests and benchmarks). The candidates are simple stand-ins for the pipeline's enhancers, with
random strengths: `unsharp` (unsharp mask), `smooth` (Gaussian blur) and `noisy` (added
noise). The generator plays the annotator and labels by what it did: an unsharp mask of
amount >= 0.8 is Positive, a blur of sigma >= 0.8 and noise of sigma >= 6 are Negative, the
milder ones Similar. The scores are measurements (sharpness: log variance of the Laplacian;
brightness), row 0 for the original, as ScorePatches stores IQA scores.

    python -m examples.photo_shards data/sample data/out/photo-shards --patch 96
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from pipeline.shards.writer import ShardWriter

CANDIDATES = ("unsharp", "smooth", "noisy")
METRICS = ("sharpness", "brightness")


def candidates(gt: np.ndarray, rand: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(3,H,W,3) uint8 stand-in candidates of a uint8 RGB HWC patch, and their (3,) int8
    labels (see the module doc)."""
    f = gt.astype(np.float32)
    amount, sigma, noise = rand.uniform(0.5, 2.0), rand.uniform(0.5, 1.5), rand.uniform(2, 12)
    unsharp = f + amount * (f - cv2.GaussianBlur(f, (0, 0), 1.0))
    smooth = cv2.GaussianBlur(f, (0, 0), sigma)
    noisy = f + rand.normal(0, noise, f.shape)
    labels = np.array([int(amount >= 0.8), -int(sigma >= 0.8), -int(noise >= 6)], np.int8)
    return np.clip(np.stack([unsharp, smooth, noisy]), 0, 255).round().astype(np.uint8), labels


def scores(images: np.ndarray) -> np.ndarray:
    """(N,2) float32: sharpness (log variance of the Laplacian of the grey image) and mean
    brightness in [0,1], for uint8 RGB (N,H,W,3)."""
    out = []
    for im in images:
        grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)
        out.append([np.log1p(cv2.Laplacian(grey, cv2.CV_32F).var()), grey.mean() / 255])
    return np.array(out, np.float32)


def patches(photo: np.ndarray, size: int, step: int) -> Iterable[tuple[int, int, np.ndarray]]:
    """(x, y, crop) on a regular grid, top-left corners in pixels."""
    h, w = photo.shape[:2]
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            yield x, y, photo[y:y + size, x:x + size]


def write_photo_shards(photos: list[np.ndarray], out_dir: Path, *, patch: int = 64,
                       step: int | None = None, scale: int = 4, samples_per_shard: int = 16,
                       compression: str | None = None, sources: list[str] | None = None,
                       seed: int = 0) -> dict:
    """Crop every uint8 RGB HWC photo on a grid of `patch`-pixel windows (stride `step`,
    default = patch) and write a shard set; returns its manifest."""
    rand = np.random.default_rng(seed)
    sources = sources or [f"photo-{i}" for i in range(len(photos))]
    lr = patch // scale
    writer = ShardWriter(out_dir, samples_per_shard=samples_per_shard, patch_size=patch,
                         scale=scale, candidate_names=list(CANDIDATES),
                         metric_names=list(METRICS), compression=compression,
                         params={"generator": "examples.photo_shards", "patch": patch,
                                 "step": step or patch, "seed": seed}, sources=sources)
    with writer:
        for s, photo in enumerate(photos):
            for x, y, gt in patches(photo, patch, step or patch):
                cands, labels = candidates(gt, rand)
                score = scores(np.concatenate([gt[None], cands]))
                lq = cv2.resize(gt, (lr, lr), interpolation=cv2.INTER_AREA)
                noisy_lq = np.clip(lq + rand.normal(0, 6, lq.shape), 0, 255).astype(np.uint8)
                writer.add(gt, cands, labels, score, lq, noisy_lq,
                           f"p{s:03d}", x, y, s)
    return writer.manifest


def read_photos(folder: Path, max_side: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Every image cv2 can decode in `folder` as uint8 RGB (optionally shrunk to `max_side`)."""
    photos, names = [], []
    for path in sorted(Path(folder).iterdir()):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        if max_side and max(bgr.shape[:2]) > max_side:
            f = max_side / max(bgr.shape[:2])
            bgr = cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        photos.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        names.append(str(path))
    return photos, names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("photos", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--step", type=int)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--samples-per-shard", type=int, default=64)
    args = p.parse_args()
    photos, names = read_photos(args.photos)
    manifest = write_photo_shards(photos, args.out_dir, patch=args.patch, step=args.step,
                                  scale=args.scale, samples_per_shard=args.samples_per_shard,
                                  sources=names)
    print(f"{manifest['samples']} samples in {len(manifest['shards'])} shards: {args.out_dir}")


if __name__ == "__main__":
    main()
