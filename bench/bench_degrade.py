"""Degradation throughput: pipeline.image.degrade against BasicSR's per-operation functions.

    .venv/bin/python -m bench.bench_degrade [--repeats 6] [--passes 4] [--threads 1] [--seed 0]
        [--breakdown]

Images: the sample photographs (pipeline.image.sample.copy_sample_corpus into a temporary folder),
read as uint8 RGB. For each recipe in luigi.cfg ([degradation.noise|blur|sr]), `passes` x 14
draws are made per repeat with `pipeline.image.degrade.draw` (a Generator seeded by --seed,
recipe and repeat) and in that repeat both sides apply exactly those draws (draw k to photo
k mod 14): the same kernel kind, size and sigmas, resize direction, factor and mode, noise
kind, level and grey/colour choice, and JPEG quality. Only the per-pixel noise differs (its
realisation, not its law). Both return uint8:
- ours: `pipeline.image.degrade.apply` (a fresh Generator per image for the pixel noise);
- baseline: BasicSR's numpy/cv2 functions (`basicsr.data.degradations`, from the
  basicsr-fixed package) composed the way Real-ESRGAN's first-order chain composes them,
  with our draw's values: BGR float32 [0, 1] image, bivariate_Gaussian or
  circular_lowpass_kernel, cv2 filter2D, cv2 resize, add_gaussian_noise or add_poisson_noise,
  add_jpg_compression with the int quality, one resize to the output size, uint8 RGB. The
  kernels keep the drawn size (no padding to 21 as Real-ESRGAN does).
Drawing is not timed on either side. The six cases (3 recipes x 2 sides) run once per repeat
in a rotating order (bench.rotation: balanced Latin square, 6 repeats = one full cycle); each
figure is the median over repeats with the min-max spread, each ratio the median (min-max) of
the per-repeat ratios; the same number of cv2 threads on both sides. Before timing, the bench
checks that our kernels equal BasicSR's, that the noise-free chain gives `baseline`'s result
to within rounding, and prints, per recipe, the mean absolute difference of ours against
BasicSR's output next to ours against ours with another noise seed (equal when both add the
same noise).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench.rotation import ratio, rotate, spread, timed
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


def baseline(rgb: np.ndarray, d: D.Draw, final_scale: int, bs) -> np.ndarray:
    """Real-ESRGAN's first-order chain with BasicSR's numpy functions, on the choices `d`
    (our draw: the same kernel, resize, noise kind and level, grey or colour noise, JPEG
    quality); only the per-pixel noise comes from numpy's global state, as BasicSR draws it.
    The image is BGR float32 [0, 1] inside, as in BasicSR. uint8 RGB HWC in and out (input
    cropped to multiples of `final_scale`, output (H // s, W // s))."""
    s = final_scale
    h, w = (rgb.shape[0] // s) * s, (rgb.shape[1] // s) * s
    img = cv2.cvtColor(rgb[:h, :w], cv2.COLOR_RGB2BGR).astype(np.float32) / 255.0
    if d.kernel == "sinc":
        kernel = bs.circular_lowpass_kernel(d.omega, d.kernel_size, pad_to=False)
    else:
        kernel = bs.bivariate_Gaussian(d.kernel_size, d.sigma_x, d.sigma_y, d.theta,
                                       isotropic=d.kernel == "iso")
    img = cv2.filter2D(img, -1, kernel)
    mode = D.INTERPOLATION[d.resize_mode]
    img = cv2.resize(img, (int(w * d.resize_scale), int(h * d.resize_scale)), interpolation=mode)
    if d.noise == "gaussian":
        img = bs.add_gaussian_noise(img, sigma=d.noise_level, clip=True, rounds=False,
                                    gray_noise=d.gray_noise)
    else:
        img = bs.add_poisson_noise(img, scale=d.noise_level, clip=True, rounds=False,
                                   gray_noise=d.gray_noise)
    img = bs.add_jpg_compression(img, d.jpeg_quality)
    img = cv2.resize(img, (w // s, h // s), interpolation=mode)
    return cv2.cvtColor(np.clip((img * 255.0).round(), 0, 255).astype(np.uint8),
                        cv2.COLOR_BGR2RGB)


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


def check_chain(images: list[np.ndarray], bs) -> float:
    """With the noise set to zero, our chain and `baseline` (the function that is timed) on the
    same draw agree to within rounding (ours resizes back in uint8, BasicSR in float). Returns
    the worst mean absolute difference over the images (0-255 grey levels)."""
    d = D.Draw("aniso", 7, 0.9, 0.3, 0.4, 0.0, "down", 0.93, "bicubic", "gaussian", 0.0,
               False, 85)
    worst = 0.0
    for rgb in images:
        ours = D.apply(rgb, d, np.random.default_rng(0), final_scale=4)
        ref = baseline(rgb, d, 4, bs)
        worst = max(worst, float(np.abs(ours.astype(np.float32) - ref).mean()))
    if worst > 0.5:
        raise AssertionError(f"our chain differs from BasicSR's by {worst:.2f} on average")
    return worst


def shared_draws(recipe: D.Recipe, count: int, seed: list[int]) -> list[D.Draw]:
    """`count` draws of `recipe` from one seeded Generator: both sides are fed these."""
    rng = np.random.default_rng(seed)
    return [D.draw(recipe, rng) for _ in range(count)]


def check_noise(images: list[np.ndarray], draws: list[D.Draw], s: int, bs) -> tuple[float, float]:
    """Mean absolute difference (0-255) of ours against BasicSR's output on the same draws,
    and of ours against ours with another per-pixel noise seed: equal within a few percent
    when both sides add the same amount of noise (only the noise realisation differs)."""
    cross, own = [], []
    np.random.seed(1)
    for i, d in enumerate(draws):
        rgb = images[i % len(images)]
        a = D.apply(rgb, d, np.random.default_rng([i, 0]), s).astype(np.float32)
        b = D.apply(rgb, d, np.random.default_rng([i, 1]), s)
        cross.append(np.abs(a - baseline(rgb, d, s, bs)).mean())
        own.append(np.abs(a - b).mean())
    return float(np.mean(cross)), float(np.mean(own))


def recipe_cases(name: str, images: list[np.ndarray], draw_sets: list[list[D.Draw]], s: int,
                 bs) -> dict:
    """The two timed cases of one recipe. Call r of either case applies draw set r (one per
    repeat, the same for both sides; draw k to photo k mod 14), ours with a fresh Generator
    per image for the pixel noise, BasicSR with numpy's global state seeded once per call."""

    def side(apply_one):
        calls = iter(draw_sets)

        def run() -> None:
            for k, d in enumerate(next(calls)):
                apply_one(k, images[k % len(images)], d)

        return timed(run)

    def theirs(k: int, rgb: np.ndarray, d: D.Draw) -> None:
        if k == 0:
            np.random.seed(0)
        baseline(rgb, d, s, bs)

    return {(name, "ours"): side(lambda k, rgb, d: D.apply(rgb, d, np.random.default_rng(k), s)),
            (name, "baseline"): side(theirs)}


def describe(draws: list[D.Draw]) -> str:
    """The mix of a list of draws: share of Poisson noise, of sinc / iso / aniso kernels."""
    n = len(draws)
    share = {k: sum(d.kernel == k for d in draws) / n for k in ("iso", "aniso", "sinc")}
    pois = sum(d.noise == "poisson" for d in draws) / n
    return (f"Poisson {pois:.0%}, iso {share['iso']:.0%} / aniso {share['aniso']:.0%} / "
            f"sinc {share['sinc']:.0%}")


def time_recipes(images: list[np.ndarray], bs, repeats: int, passes: int, seed: int) -> None:
    """Print images/s of both sides per recipe, median (min-max) over `repeats` of `passes`
    passes over the photos (a new set of draws per repeat, shared by both sides), and the
    median (min-max) of the per-repeat ratios."""
    cases, counts = {}, {}
    print("| recipe | draws (same on both sides) | noise check: ours vs BasicSR / ours vs "
          "ours (mean abs, 0-255) |")
    print("|---|---|---|")
    for name in RECIPES:
        recipe = load_recipe(name)
        sets = [shared_draws(recipe, passes * len(images), seed=[seed, RECIPES.index(name), r])
                for r in range(repeats)]
        cross, own = check_noise(images, sets[0][:len(images)], recipe.final_scale, bs)
        print(f"| {name} | {describe([d for ds in sets for d in ds])} | {cross:.2f} / "
              f"{own:.2f} |")
        cases.update(recipe_cases(name, images, sets, recipe.final_scale, bs))
        counts[name] = passes * len(images)
    runs = rotate(cases, repeats)
    wall = {k: [t.wall for t in v] for k, v in runs.items()}
    print("\n| recipe | ours images/s | baseline images/s | baseline time / ours |")
    print("|---|---|---|---|")
    for name in RECIPES:
        ours, base = wall[(name, "ours")], wall[(name, "baseline")]
        print(f"| {name} | {spread(ours).inverse(counts[name]).fmt('.1f')} | "
              f"{spread(base).inverse(counts[name]).fmt('.1f')} | "
              f"{ratio(base, ours).fmt('.2f', 'x')} |")
    total = {side: [sum(wall[(n, side)][r] for n in RECIPES) for r in range(repeats)]
             for side in ("ours", "baseline")}
    n = sum(counts.values())
    print(f"| all three | {spread(total['ours']).inverse(n).fmt('.1f')} | "
          f"{spread(total['baseline']).inverse(n).fmt('.1f')} | "
          f"**{ratio(total['baseline'], total['ours']).fmt('.2f', 'x')}** |")


def operations(images: list[np.ndarray], bs) -> dict:
    """Each operation alone, (ours, BasicSR) callables over all photos, same parameters."""
    r = load_recipe("noise")
    f32 = [im.astype(np.float32) for im in images]
    unit = [im / 255.0 for im in f32]
    rng = np.random.default_rng(0)
    k7 = D.gaussian_kernel(7, 0.8, 0.4, 0.5)
    taps = D.gaussian_1d(7, 0.4)
    d_gauss = D.Draw(**{**D.draw(r, rng).__dict__, "noise": "gaussian", "noise_level": 10.0,
                        "gray_noise": False})
    d_pois = D.Draw(**{**d_gauss.__dict__, "noise": "poisson", "noise_level": 0.7})
    return {
        "blur 7x7 anisotropic": (lambda: [cv2.filter2D(x, -1, k7) for x in f32],
                                 lambda: [cv2.filter2D(x, -1, k7.astype(np.float64))
                                          for x in unit]),
        "blur 7x7 isotropic": (lambda: [cv2.sepFilter2D(x, cv2.CV_32F, taps, taps)
                                        for x in images],
                               lambda: [cv2.filter2D(x, -1, np.outer(taps, taps).astype(
                                   np.float64)) for x in unit]),
        "Gaussian noise": (lambda: [D.add_noise(x.copy(), d_gauss, rng) for x in f32],
                           lambda: [bs.add_gaussian_noise(x, 10.0) for x in unit]),
        "Poisson noise": (lambda: [D.add_noise(x.copy(), d_pois, rng) for x in f32],
                          lambda: [bs.add_poisson_noise(x, 0.7) for x in unit]),
        "JPEG q90": (lambda: [D.jpeg(to_uint8(x), 90) for x in f32],
                     lambda: [bs.add_jpg_compression(x, 90) for x in unit]),
    }


def breakdown(images: list[np.ndarray], bs, repeats: int) -> None:
    """Print milliseconds per megapixel of each operation alone, ours against BasicSR's:
    median (min-max) of `repeats`, the two sides in alternating order."""
    mp = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    print(f"\nper operation, ms per megapixel ({mp:.2f} MP), median (min-max) of {repeats}, "
          "sides alternating:\n")
    print("| operation | ours | BasicSR | BasicSR time / ours |")
    print("|---|---|---|---|")
    for name, (ours, base) in operations(images, bs).items():
        runs = rotate({"ours": timed(ours), "base": timed(base)}, repeats)
        a, b = ([t.wall for t in runs[k]] for k in ("ours", "base"))
        print(f"| {name} | {spread(a).scaled(1e3 / mp).fmt('.1f')} | "
              f"{spread(b).scaled(1e3 / mp).fmt('.1f')} | {ratio(b, a).fmt('.2f', 'x')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=6, help="repeats (6 = one full rotation)")
    ap.add_argument("--passes", type=int, default=4, help="passes over the photos per timing")
    ap.add_argument("--threads", type=int, default=1, help="cv2 threads (both sides)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shared draws")
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
          f"{args.passes} passes per timing, median (min-max) of {args.repeats} repeats, the 6 "
          f"cases in rotating order; both sides apply the same draws (a new set per repeat, "
          f"seed {args.seed}); kernels equal BasicSR's; "
          f"noise-free chain within {agree:.2f} grey levels of BasicSR's on average\n")
    time_recipes(images, bs, args.repeats, args.passes, args.seed)
    if args.breakdown:
        breakdown(images, bs, args.repeats)


if __name__ == "__main__":
    main()
