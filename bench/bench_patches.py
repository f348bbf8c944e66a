"""Texture statistics of every grid window of a 2048x2048 image: vectorised against per-crop
and against the floor of one pass over the image.

    .venv/bin/python -m bench.bench_patches [--size 2048] [--repeats 7] [--threads N]

The image is the astronaut sample photo resized to size x size. Windows: the HGGT grid of
the paper preset (crop 512, step 288) and of the tiny preset (crop 128, step 72). Rows:
- vectorised: `pipeline.image.patches.window_stats` (integral images, all windows at once);
- per-crop: what the HGGT reference script does for each window (crop the RGB image, convert
  it to grey, std, variance of the Laplacian of the crop; for pyramid_std the band of the crop);
- floor: as the issue words it, one pass over the whole image, no window read: greyscale
  conversion, the Laplacian (or the pyramid band) and the integral images (sum and sum of
  squares) of grey and of it;
- bare pass: grey and high-pass image only, in strips, no sums: less than any method can do.
All timings are taken interleaved in one process, best of `repeats`, as wall-clock and as
process CPU time (on a shared machine the CPU time is less hurt by other processes); the
vectorised and per-crop results are checked to agree.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import skimage.data

from pipeline.image.patches import finest_band, grid_positions, luma, window_stats

GRIDS = {
    "paper (crop 512, step 288)": dict(crop=512, step=288, offset_max=[32, 64, 128],
                                       offset_thresholds=[1200, 2400], jitter=16, align=4),
    "tiny (crop 128, step 72)": dict(crop=128, step=72, offset_max=[8, 16, 32],
                                     offset_thresholds=[1200, 2400], jitter=4, align=4),
}


def per_crop(rgb: np.ndarray, positions: np.ndarray, crop: int, measure: str):
    """The reference way: every window cropped and measured on its own. For pyramid_std the
    crop carries an 8-px margin of context so that its band is the whole image's band."""
    h, w = rgb.shape[:2]
    std, hf = [], []
    for y, x in positions:
        grey = luma(rgb[y:y + crop, x:x + crop])
        std.append(cv2.meanStdDev(grey)[1][0, 0])
        if measure == "laplacian_var":
            hf.append(cv2.Laplacian(grey, cv2.CV_32F).var(dtype=np.float64))
        else:
            y0, x0 = max(0, y - 8), max(0, x - 8)
            band = finest_band(luma(rgb[y0:min(h, y + crop + 8), x0:min(w, x + crop + 8)]))
            hf.append(band[y - y0:y - y0 + crop, x - x0:x - x0 + crop].std(dtype=np.float64))
    return np.array(std), np.array(hf)


def floor(rgb: np.ndarray, measure: str) -> None:
    """The floor as the issue words it: one pass over the whole image, no window read:
    greyscale conversion, the high-pass image (Laplacian or pyramid band) and the integral
    images (sum and sum of squares) of grey and of the high-pass image."""
    grey = luma(rgb)
    high = cv2.Laplacian(grey, cv2.CV_32F) if measure == "laplacian_var" else finest_band(grey)
    cv2.integral2(grey, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
    cv2.integral2(high, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)


def bare_pass(rgb: np.ndarray, measure: str, rows: int = 64) -> None:
    """Less than any method can do: grey and high-pass image only, in cache-sized strips
    (as window_stats runs), no sums at all."""
    halo = 1 if measure == "laplacian_var" else 8
    for r0 in range(0, rgb.shape[0], rows):
        grey = luma(rgb[max(0, r0 - halo):r0 + rows + halo])
        cv2.Laplacian(grey, cv2.CV_32F) if measure == "laplacian_var" else finest_band(grey)


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: cv2's)")
    args = ap.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    rgb = cv2.resize(skimage.data.astronaut(), (args.size, args.size),
                     interpolation=cv2.INTER_CUBIC)
    print(f"{args.size}x{args.size} RGB, cv2 threads {cv2.getNumThreads()}, best of "
          f"{args.repeats}; wall ms / process CPU ms (CPU time is less hurt by other processes)\n")
    names = ("vectorised", "per-crop", "floor", "bare pass")
    print(_row(["grid", "hf measure", "windows", *(f"{n} ms" for n in names),
                "per-crop / vectorised", "vectorised / floor", "vectorised / bare pass"]))
    print(_row(["---"] * 10))
    for grid_name, grid in GRIDS.items():
        pos = grid_positions(args.size, args.size, rng=np.random.default_rng(0), **grid)
        crop = grid["crop"]
        for measure in ("laplacian_var", "pyramid_std"):
            cases = dict(zip(names, (
                lambda: window_stats(rgb, pos, crop, measure),  # noqa: B023
                lambda: per_crop(rgb, pos, crop, measure),  # noqa: B023
                lambda: floor(rgb, measure),  # noqa: B023
                lambda: bare_pass(rgb, measure),  # noqa: B023
            ), strict=True))
            fast, slow = cases["vectorised"](), cases["per-crop"]()
            for a, b in zip(fast, slow, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
            wall = dict.fromkeys(cases, float("inf"))
            cpu = dict.fromkeys(cases, float("inf"))
            for _ in range(args.repeats):
                for name, fn in cases.items():
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    cpu[name] = min(cpu[name], time.process_time() - c)
                    wall[name] = min(wall[name], time.perf_counter() - t)

            def pair(a: str, b: str, wall=wall, cpu=cpu) -> str:
                return f"{wall[a] / wall[b]:.2f}x / {cpu[a] / cpu[b]:.2f}x"

            print(_row([grid_name, measure, len(pos),
                        *(f"{1e3 * wall[n]:.1f} / {1e3 * cpu[n]:.1f}" for n in names),
                        pair("per-crop", "vectorised"), pair("vectorised", "floor"),
                        pair("vectorised", "bare pass")]))


if __name__ == "__main__":
    main()
