"""Texture statistics of every grid window of a 2048x2048 image: vectorised against per-crop
and against the floor of the same pass without window reads.

    .venv/bin/python -m bench.bench_patches [--size 2048] [--repeats 8] [--threads N]

The image is the astronaut sample photo resized to size x size. Windows: the HGGT grid of
the paper preset (crop 512, step 288) and of the tiny preset (crop 128, step 72). Cases:
- vectorised: `pipeline.image.patches.window_stats` (strips, block means, integral images of
  the block means, all windows at once, exact crop-border terms);
- per-crop: what the HGGT reference script does for each window (crop the RGB image, Pillow
  "L" grey, std, variance of cv2.Laplacian(crop, CV_8U); for pyramid_std the band of the crop
  with an 8-px margin);
- floor: the work window_stats does that no window needs: Pillow "L" grey of the image, then
  in the same strips the same float32 centred grey, high-pass image, b x b block means of the
  grey, the high-pass image and their squares, and the float64 integral images of the four
  block-mean planes (b = the same block size); no window read, no crop-border term;
- bare pass: grey and high-pass image only, in the same strips, no sums at all.
The four cases run once per repeat in a rotating order (bench.rotation: balanced Latin
square, 4 repeats = one cycle, so each case follows each other case equally often), timed as
wall-clock and as process CPU time; figures are medians with the min-max spread, ratios the
median (min-max) of per-repeat ratios. The vectorised and per-crop results are checked to agree.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import skimage.data

from bench.rotation import Timing, cycle_length, ratio, rotate, spread, timed
from pipeline.image.patches import (
    STRIP_ROWS,
    _block_means,
    _centred,
    _high_pass,
    _variance,
    _window_sums,
    block_size,
    finest_band,
    grid_positions,
    texture_grey,
    window_stats,
)

GRIDS = {
    "paper (crop 512, step 288)": dict(crop=512, step=288, offset_max=[32, 64, 128],
                                       offset_thresholds=[1200, 2400], jitter=16, align=4),
    "tiny (crop 128, step 72)": dict(crop=128, step=72, offset_max=[8, 16, 32],
                                     offset_thresholds=[1200, 2400], jitter=4, align=4),
}
NAMES = ("vectorised", "per-crop", "floor", "bare pass")


def per_crop(rgb: np.ndarray, positions: np.ndarray, crop: int,
             measure: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference way, every window cropped and measured on its own: (std, hf) float64 (N,).
    For pyramid_std the crop carries an 8-px margin so that its band is the whole image's."""
    h, w = rgb.shape[:2]
    std, hf = [], []
    for y, x in positions:
        grey = texture_grey(rgb[y:y + crop, x:x + crop])
        std.append(cv2.meanStdDev(grey.astype(np.float32))[1][0, 0])
        if measure == "laplacian_var":
            hf.append(cv2.Laplacian(grey, cv2.CV_8U).var())
        else:
            y0, x0 = max(0, y - 8), max(0, x - 8)
            big = texture_grey(rgb[y0:min(h, y + crop + 8), x0:min(w, x + crop + 8)])
            band = finest_band(big.astype(np.float32))
            hf.append(band[y - y0:y - y0 + crop, x - x0:x - x0 + crop].std(dtype=np.float64))
    return np.array(std), np.array(hf)


def _strips(h: int, block: int, measure: str):
    """(a0, r0, r1, a1) of window_stats's strips: rows [r0, r1), read with their halo as
    rows [a0, a1)."""
    halo = 1 if measure == "laplacian_var" else 8
    unit = np.lcm(block, 2)
    rows = max(1, STRIP_ROWS // unit) * unit
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        yield max(0, r0 - halo), r0, r1, min(h, r1 + halo)


def floor(rgb: np.ndarray, measure: str, block: int) -> list[np.ndarray]:
    """window_stats's image pass without its window reads and crop-border terms: the float64
    integral images ((H/b + 1, W/b + 1) each) of the b x b block means of grey, grey^2, high,
    high^2, from the same grey, strips, float32 planes and block size."""
    image = texture_grey(rgb)
    h, w = image.shape
    means = np.empty((4, h // block, w // block), np.float32)
    for a0, r0, r1, a1 in _strips(h, block, measure):
        grey = _centred(image[a0:a1])
        _, high = _high_pass(grey, measure)
        q0, q1 = r0 // block, r1 // block
        if q1 > q0:
            core = slice(r0 - a0, r0 - a0 + (q1 - q0) * block)
            means[0:2, q0:q1] = _block_means(grey[core], block)
            means[2:4, q0:q1] = _block_means(high[core], block)
    return [cv2.integral(m, sdepth=cv2.CV_64F) for m in means]


def check_floor(integrals: list[np.ndarray], pos: np.ndarray, crop: int, block: int,
                measure: str, stats: tuple[np.ndarray, np.ndarray]) -> None:
    """The floor's integral images are window_stats's: read at the windows, they give its std
    (and, for pyramid_std, which has no crop-border term, its hf) to float rounding."""
    by, bx, bc = pos[:, 0] // block, pos[:, 1] // block, crop // block
    sums = [block * block * _window_sums(i, by, bx, bc) for i in integrals]
    n = crop * crop
    np.testing.assert_allclose(np.sqrt(_variance(sums[0], sums[1], n)), stats[0], rtol=1e-6)
    if measure == "pyramid_std":
        np.testing.assert_allclose(np.sqrt(_variance(sums[2], sums[3], n)), stats[1], rtol=1e-6)


def bare_pass(rgb: np.ndarray, measure: str, block: int) -> None:
    """Less than any method can do: the same grey and high-pass image in the same strips,
    no squares, block means or sums."""
    image = texture_grey(rgb)
    h = image.shape[0]
    for a0, _, _, a1 in _strips(h, block, measure):
        _high_pass(_centred(image[a0:a1]), measure)


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def measure_grid(rgb: np.ndarray, grid: dict, measure: str,
                 repeats: int) -> tuple[int, dict[str, list[Timing]]]:
    """(windows, timings per case) for one grid and measure, after checking that the
    vectorised and per-crop statistics agree."""
    size = rgb.shape[0]
    pos = grid_positions(size, size, rng=np.random.default_rng(0), **grid)
    crop = grid["crop"]
    block = block_size(crop, pos)
    stats = window_stats(rgb, pos, crop, measure)
    for a, b in zip(stats, per_crop(rgb, pos, crop, measure), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    check_floor(floor(rgb, measure, block), pos, crop, block, measure, stats)
    cases = dict(zip(NAMES, (
        lambda: window_stats(rgb, pos, crop, measure),
        lambda: per_crop(rgb, pos, crop, measure),
        lambda: floor(rgb, measure, block),
        lambda: bare_pass(rgb, measure, block),
    ), strict=True))
    for fn in cases.values():
        fn()  # warm-up
    return len(pos), rotate({k: timed(fn) for k, fn in cases.items()}, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=8, help="repeats (a multiple of 4 = "
                    "whole cycles of the rotation)")
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: cv2's)")
    args = ap.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    rgb = cv2.resize(skimage.data.astronaut(), (args.size, args.size),
                     interpolation=cv2.INTER_CUBIC)
    print(f"{args.size}x{args.size} RGB, cv2 threads {cv2.getNumThreads()}, {args.repeats} "
          f"repeats, the {len(NAMES)} cases in rotating order ({cycle_length(len(NAMES))} "
          "repeats per cycle); median (min-max); ratios are medians of per-repeat ratios\n")
    rows = []
    for grid_name, grid in GRIDS.items():
        for measure in ("laplacian_var", "pyramid_std"):
            rows.append((grid_name, measure, *measure_grid(rgb, grid, measure, args.repeats)))
    for clock in ("wall", "cpu"):
        print(f"\n{'wall-clock' if clock == 'wall' else 'process CPU'} time:\n")
        print(_row(["grid", "hf measure", "windows", *(f"{n} ms" for n in NAMES),
                    "per-crop / vectorised", "vectorised / floor", "vectorised / bare pass"]))
        print(_row(["---"] * 10))
        for grid_name, measure, windows, runs in rows:
            t = {k: [getattr(x, clock) for x in v] for k, v in runs.items()}
            print(_row([grid_name, measure, windows,
                        *(spread(t[n]).scaled(1e3).fmt(".1f") for n in NAMES),
                        ratio(t["per-crop"], t["vectorised"]).fmt(".2f", "x"),
                        ratio(t["vectorised"], t["floor"]).fmt(".2f", "x"),
                        ratio(t["vectorised"], t["bare pass"]).fmt(".2f", "x")]))


if __name__ == "__main__":
    main()
