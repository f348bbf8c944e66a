"""Training input: crops per second from the memory-mapped feed (pipeline.train.feed) against
the path it replaced (whole PNGs decoded on the training thread behind an LRU cache), on one
corpus of 2040x1356 photos (DIV2K's typical size) made from the sample photos.

    python -m bench.bench_feed            # 24 photos, 3 repeats, about 3 minutes here

Cases, each `--steps` batches of 16 (the paper batch):
- lru: today's path before this change: the enhancer pair of a random photo (its PNG and its
  pre-degraded PNG) decoded on a cache miss, `--cache` photos cached (the corpus is
  `--photos` long, so most draws miss, as with thousands of photos and a cache of 64), one
  96^2 crop with a random flip. No degradation at run time: it was done ahead, on disk.
- feed 96 enhancer: a 96^2 crop of the memory-mapped photo with a fresh Eq. 1 degradation per
  sample (DegradedPairs, the noise recipe), in this process (= one core).
- feed 256 vqvae / feed 256 cfmg: 256^2 crops (1 image / the GT and 3 SR variants), flips.
- feed 96 enhancer, 2 workers: the enhancer case through 2 DataLoader worker processes (the
  machine's 2 cores); the loader's start and each worker's first batch are not counted.
Cases run in a rotating order per repeat (bench.rotation); each figure is the median with the
min-max over repeats.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from bench.rotation import rotate, spread, timed
from pipeline.image.degrade import degrade
from pipeline.store.imageio import read_rgb, write_rgb
from pipeline.store.seeding import rng
from pipeline.train.enhancer import DegradedPairs
from pipeline.train.feed import AlignedCrops, ArrayStore, CropBatches, Feed, dihedral
from tasks.degrade import load_recipe

BATCH, SIZE = 16, (2040, 1356)
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_corpus(folder: Path, count: int) -> list[str]:
    """`count` 2040x1356 photos (sample photos enlarged, seeded crop and flip), written as
    PNG, pre-degraded PNG (the old path's input) and memory-mappable arrays; their names."""
    store, names = ArrayStore(folder / "arrays"), []
    recipe = load_recipe("noise")
    for i in range(count):
        name, draw = f"photo{i:03d}", rng("bench-feed", i)
        if not (folder / f"{name}.png").exists():
            photo = getattr(skimage.data, SOURCES[i % len(SOURCES)])()
            photo = cv2.resize(photo, SIZE, interpolation=cv2.INTER_CUBIC)
            photo = np.ascontiguousarray(photo[:, ::-1] if draw.integers(2) else photo)
            write_rgb(folder / f"{name}.png", photo)
            write_rgb(folder / f"{name}_lq.png", degrade(photo, recipe, draw))
        store.put(name, functools.partial(read_rgb, folder / f"{name}.png"))
        names.append(name)
    return names


def lru_case(folder: Path, names: list[str], cache: int, steps: int) -> Callable[[], None]:
    """The replaced path: per sample a random photo's (clean, degraded) PNGs through an LRU
    cache of `cache` photos, one aligned 96^2 crop with one of 8 flips."""

    def run() -> None:
        pair = functools.lru_cache(maxsize=cache)(
            lambda n: (read_rgb(folder / f"{n}.png"), read_rgb(folder / f"{n}_lq.png")))
        for step in range(steps):
            draw = rng("lru", step)
            for _ in range(BATCH):
                clean, lq = pair(names[int(draw.integers(len(names)))])
                h, w = clean.shape[:2]
                y, x = int(draw.integers(h - 96)), int(draw.integers(w - 96))
                k = int(draw.integers(8))
                np.stack([dihedral(im[y:y + 96, x:x + 96], k) for im in (clean, lq)])

    return run


def feed_case(batches: CropBatches, steps: int, workers: int) -> Callable[[], None]:
    """A Feed with `workers` processes whose warm-up (the loader's start, and in every worker
    its first batch: one-time tables such as the Poisson sampler's) is done first; returns a
    case that makes the next `steps` batches."""
    feed = Feed(batches, 10**9, workers)
    done = [max(workers, 1)]
    for step in range(done[0]):
        feed(step)

    def run() -> None:
        for step in range(done[0], done[0] + steps):
            feed(step)
        done[0] += steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/gtforge-bench-feed"))
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--cache", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    names = make_corpus(args.dir, args.photos)
    store = ArrayStore(args.dir / "arrays")
    one = [[n] for n in names]
    enhancer = CropBatches(store, one, DegradedPairs(96, load_recipe("noise")), BATCH, "e")
    crops256 = AlignedCrops(256, flips=4)
    cases = {
        "lru 96 (pre-degraded PNGs)": lru_case(args.dir, names, args.cache, args.steps),
        "feed 96 enhancer, 1 process": feed_case(enhancer, args.steps, 0),
        "feed 96 enhancer, 2 workers": feed_case(enhancer, args.steps, 2),
        "feed 256 vqvae, 1 process": feed_case(CropBatches(store, one, crops256, BATCH, "v"),
                                               args.steps, 0),
        "feed 256 cfmg (4 sources), 1 process": feed_case(
            CropBatches(store, [[n] * 4 for n in names], crops256, BATCH, "c", stack=True),
            args.steps, 0),
    }
    results = rotate({name: timed(case) for name, case in cases.items()}, args.repeats)
    crops = args.steps * BATCH
    print(f"{args.photos} photos of {SIZE[0]}x{SIZE[1]}, {args.steps} batches of {BATCH}, "
          f"{args.repeats} repeats (median, min-max); LRU cache {args.cache} photos")
    print(f"{'case':40s} {'crops/s (wall)':>26s} {'this process CPU s/1000':>24s}")
    lru_wall = [t.wall for t in results["lru 96 (pre-degraded PNGs)"]]
    for name, timings in results.items():
        rate = spread([crops / t.wall for t in timings])
        cpu = spread([1000 * t.cpu / crops for t in timings])
        vs = spread([a / t.wall for a, t in zip(lru_wall, timings, strict=True)])
        print(f"{name:40s} {rate.fmt('.0f'):>26s} {cpu.fmt('.2f'):>24s}   x{vs.fmt('.1f')} lru")


if __name__ == "__main__":
    main()
