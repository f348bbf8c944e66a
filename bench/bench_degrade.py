"""Degradation throughput: pipeline.image.degrade against BasicSR's per-operation functions.

    .venv/bin/python -m bench.bench_degrade [--repeats 3] [--passes 4] [--threads 1] [--breakdown]

Images: the sample photographs (pipeline.image.sample.copy_sample_corpus into a temporary folder),
read as uint8 RGB. For each recipe in luigi.cfg ([degradation.noise|blur|sr]), both sides run
the same chain on the same images and return uint8:
- ours: `pipeline.image.degrade.degrade` (one numpy Generator per image);
- baseline: BasicSR's numpy/cv2 functions (`basicsr.data.degradations`, from the
  basicsr-fixed package) composed the way Real-ESRGAN's first-order chain composes them:
  float32 [0, 1] image, random_mixed_kernels(iso, aniso) or circular_lowpass_kernel, cv2
  filter2D, cv2 resize up/down/keep, random_add_gaussian_noise or random_add_poisson_noise,
  add_jpg_compression with an int quality, one resize to the output size, uint8.
  The baseline's kernels keep the drawn size (no padding to 21 as Real-ESRGAN does), so
  both sides convolve with kernels of the same size.
Timings are interleaved in one process (ours, baseline, ours, ...), best of `repeats` per side
of `passes` passes over the photos, with the same number of cv2 threads on both sides. Before
timing, the bench checks that our kernels equal BasicSR's for the same parameters and that the
noise-free chain gives BasicSR's result to within rounding.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.image import degrade as D
from pipeline.image.conversions import to_uint8
from pipeline.image.sample import copy_sample_corpus
from pipeline.store.imageio import read_rgb
from tasks.degrade import load_recipe

RECIPES = ("noise", "blur", "sr")


def _basicsr():
    try:
        from basicsr.data import degradations
    except ImportError as e:
        raise SystemExit("the baseline needs BasicSR: .venv/bin/pip install "
                         f"--no-build-isolation basicsr-fixed ({e})") from None
    return degradations


def baseline(rgb: np.ndarray, r: D.Recipe, bs) -> np.ndarray:
    """Real-ESRGAN's first-order chain with BasicSR's numpy functions (global numpy/random
    state, as BasicSR draws). uint8 RGB HWC in and out."""
    s = r.final_scale
    h, w = (rgb.shape[0] // s) * s, (rgb.shape[1] // s) * s
    img = rgb[:h, :w].astype(np.float32) / 255.0
    size = random.choice(r.kernel_sizes)
    if np.random.uniform() < r.sinc_prob:
        kernel = bs.circular_lowpass_kernel(np.random.uniform(*r.sinc_omega), size, pad_to=False)
    else:
        kernel = bs.random_mixed_kernels(["iso", "aniso"], [r.iso_prob, 1 - r.iso_prob], size,
                                         r.blur_sigma, r.blur_sigma, [-math.pi, math.pi],
                                         noise_range=None)
    img = cv2.filter2D(img, -1, kernel)
    updown = random.choices(D.RESIZE_DIRECTIONS, r.resize_probs)[0]
    scale = {"up": lambda: np.random.uniform(1, r.resize_range[1]),
             "down": lambda: np.random.uniform(r.resize_range[0], 1),
             "keep": lambda: 1.0}[updown]()
    mode = D.INTERPOLATION[random.choice(r.resize_modes)]
    img = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=mode)
    if np.random.uniform() < r.gaussian_prob:
        img = bs.random_add_gaussian_noise(img, sigma_range=r.noise_sigma, clip=True,
                                           rounds=False, gray_prob=r.gray_noise_prob)
    else:
        img = bs.random_add_poisson_noise(img, scale_range=r.poisson_scale, clip=True,
                                          rounds=False, gray_prob=r.gray_noise_prob)
    img = bs.add_jpg_compression(img, int(np.random.randint(r.jpeg_quality[0],
                                                            r.jpeg_quality[1] + 1)))
    img = cv2.resize(img, (w // s, h // s), interpolation=mode)
    return np.clip((img * 255.0).round(), 0, 255).astype(np.uint8)


def check_kernels(bs) -> None:
    """Our kernels are BasicSR's for the same parameters."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        size = int(rng.choice([3, 5, 7, 9, 21]))
        sx, sy, theta = rng.uniform(0.1, 3.0), rng.uniform(0.1, 3.0), rng.uniform(-math.pi, math.pi)
        np.testing.assert_allclose(D.gaussian_kernel(size, sx, sy, theta),
                                   bs.bivariate_Gaussian(size, sx, sy, theta, isotropic=False),
                                   atol=1e-6)
        np.testing.assert_allclose(np.outer(D.gaussian_1d(size, sx), D.gaussian_1d(size, sx)),
                                   bs.bivariate_Gaussian(size, sx, sx, 0, isotropic=True),
                                   atol=1e-6)
        omega = rng.uniform(math.pi / 3, math.pi)
        np.testing.assert_allclose(D.sinc_kernel(size, omega),
                                   bs.circular_lowpass_kernel(omega, size), atol=1e-6)


def check_chain(images, bs) -> float:
    """With the noise set to zero, our chain and BasicSR's operations on the same draw agree
    to within rounding (ours resizes back in uint8, BasicSR in float). Returns the mean
    absolute difference (0-255)."""
    d = D.Draw("aniso", 7, 0.9, 0.3, 0.4, 0.0, "down", 0.93, "bicubic", "gaussian", 0.0,
               False, 85)
    diffs = []
    for rgb in images:
        h, w = (rgb.shape[0] // 4) * 4, (rgb.shape[1] // 4) * 4
        rgb = rgb[:h, :w]
        ours = D.apply(rgb, d, np.random.default_rng(0), final_scale=4)
        img = cv2.filter2D(rgb.astype(np.float32) / 255.0, -1, bs.bivariate_Gaussian(
            7, 0.9, 0.3, 0.4, isotropic=False))
        img = cv2.resize(img, (int(w * 0.93), int(h * 0.93)), interpolation=cv2.INTER_CUBIC)
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # BasicSR's JPEG expects BGR
        img = cv2.cvtColor(bs.add_jpg_compression(img, 85), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC)
        ref = np.clip((img * 255.0).round(), 0, 255)
        diffs.append(np.abs(ours - ref).mean())
    worst = max(diffs)
    if worst > 0.5:
        raise AssertionError(f"our chain differs from BasicSR's by {worst:.2f} on average")
    return float(np.mean(diffs))


def time_recipe(images, recipe: D.Recipe, bs, repeats: int, passes: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds for `passes` passes over the images: (ours, baseline),
    interleaved. Each pass draws anew, so both sides see a similar mix of kernels and noise
    kinds (the two sides draw from different generators)."""
    best = {"ours": math.inf, "baseline": math.inf}
    for rep in range(repeats):
        t = time.perf_counter()
        for p in range(passes):
            for i, rgb in enumerate(images):
                D.degrade(rgb, recipe, np.random.default_rng([rep, p, i]))
        best["ours"] = min(best["ours"], time.perf_counter() - t)
        np.random.seed(rep)
        random.seed(rep)
        t = time.perf_counter()
        for _ in range(passes):
            for rgb in images:
                baseline(rgb, recipe, bs)
        best["baseline"] = min(best["baseline"], time.perf_counter() - t)
    return best["ours"], best["baseline"]


def breakdown(images, bs, repeats: int) -> None:
    """Milliseconds per megapixel of each operation alone, ours against BasicSR's."""
    r = load_recipe("noise")
    f32 = [im.astype(np.float32) for im in images]
    unit = [im / 255.0 for im in f32]
    u8 = images
    mp = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    rng = np.random.default_rng(0)
    k7 = D.gaussian_kernel(7, 0.8, 0.4, 0.5)
    taps = D.gaussian_1d(7, 0.4)
    d_gauss = D.draw(r, rng)
    d_gauss = D.Draw(**{**d_gauss.__dict__, "noise": "gaussian", "noise_level": 10.0,
                        "gray_noise": False})
    d_pois = D.Draw(**{**d_gauss.__dict__, "noise": "poisson", "noise_level": 0.7})
    ops = {
        "blur 7x7 anisotropic": (lambda: [cv2.filter2D(x, -1, k7) for x in f32],
                                 lambda: [cv2.filter2D(x, -1, k7.astype(np.float64))
                                          for x in unit]),
        "blur 7x7 isotropic": (lambda: [cv2.sepFilter2D(x, cv2.CV_32F, taps, taps) for x in u8],
                               lambda: [cv2.filter2D(x, -1, np.outer(taps, taps).astype(
                                   np.float64)) for x in unit]),
        "Gaussian noise": (lambda: [D.add_noise(x.copy(), d_gauss, rng) for x in f32],
                           lambda: [bs.random_add_gaussian_noise(x, (10, 10)) for x in unit]),
        "Poisson noise": (lambda: [D.add_noise(x.copy(), d_pois, rng) for x in f32],
                          lambda: [bs.random_add_poisson_noise(x, (0.7, 0.7)) for x in unit]),
        "JPEG q90": (lambda: [D.jpeg(to_uint8(x), 90) for x in f32],
                     lambda: [bs.add_jpg_compression(x, 90) for x in unit]),
    }
    print(f"\nper operation, ms per megapixel ({mp:.2f} MP, best of {repeats}):\n")
    print("| operation | ours | BasicSR | BasicSR / ours |")
    print("|---|---|---|---|")
    for name, (ours, base) in ops.items():
        best = [math.inf, math.inf]
        for _ in range(repeats):
            for side, fn in enumerate((ours, base)):
                t = time.perf_counter()
                fn()
                best[side] = min(best[side], time.perf_counter() - t)
        a, b = (1e3 * s / mp for s in best)
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--passes", type=int, default=4, help="passes over the photos per timing")
    ap.add_argument("--threads", type=int, default=1, help="cv2 threads (both sides)")
    ap.add_argument("--breakdown", action="store_true", help="also time each operation alone")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # BasicSR's float JPEG
    bs = _basicsr()
    check_kernels(bs)
    with tempfile.TemporaryDirectory() as tmp:
        images = [read_rgb(p) for p in copy_sample_corpus(Path(tmp))]
    mp = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    agree = check_chain(images, bs)
    print(f"{len(images)} sample photos ({mp:.2f} MP), cv2 threads {cv2.getNumThreads()}, "
          f"{args.passes} passes, best of {args.repeats}; kernels equal BasicSR's; noise-free "
          f"chain within {agree:.2f} grey levels of BasicSR's on average\n")
    print("| recipe | ours images/s | baseline images/s | ours / baseline |")
    print("|---|---|---|---|")
    totals = [0.0, 0.0]
    for name in RECIPES:
        ours, base = time_recipe(images, load_recipe(name), bs, args.repeats, args.passes)
        totals = [totals[0] + ours, totals[1] + base]
        n = len(images) * args.passes
        print(f"| {name} | {n / ours:.1f} | {n / base:.1f} | {base / ours:.2f}x |")
    n = len(images) * args.passes * len(RECIPES)
    print(f"| all three | {n / totals[0]:.1f} | {n / totals[1]:.1f} | "
          f"{totals[1] / totals[0]:.2f}x |")
    if args.breakdown:
        breakdown(images, bs, args.repeats)


if __name__ == "__main__":
    main()
