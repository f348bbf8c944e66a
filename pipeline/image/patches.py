"""Patch selection (HGGT): the crop grid, texture statistics of every window at once, patches.npz.

The texture test of HGGT keeps a crop when its greyscale standard deviation and its
high-frequency energy both reach a threshold. The reference script measures crop by crop;
here every window of an image comes from one pass over the image and integral images
(summed-area tables): O(1) reads per window, plus O(1) reads for the exact crop-border
change of the Laplacian (`_CropBorderTerms`). Grid windows are aligned to the LR scale, so
the pass runs in cache-sized strips and the integral images are taken over b x b block means.
"""

from __future__ import annotations

import bisect
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.store import durable

# ITU-R BT.601 luma weights (R, G, B); cv2's RGB2GRAY uses the same numbers.
LUMA_601 = (0.299, 0.587, 0.114)
# laplacian_var: variance of the 3x3 Laplacian over the crop (HGGT reference code);
# pyramid_std: std of the finest Laplacian-pyramid band over the crop (HGGT paper text).
HF_MEASURES = ("laplacian_var", "pyramid_std")
PATCHES_NPZ = "patches.npz"  # the file SelectPatches writes with save_patches
PATCH_KEYS = ("image_id", "x", "y", "size")
ID_DTYPE = "<U16"
GREY_CENTRE = 128.0
# Rows per strip of the image pass (rounded to a multiple of the block size and of 2).
STRIP_ROWS = 64


def offset_limit(short_side: int, offset_max: Sequence[int],
                 offset_thresholds: Sequence[int]) -> int:
    """k of the random start offset [0, k]: offset_max[i], where i is the number of
    offset_thresholds that `short_side` reaches (HGGT: 32 / 64 / 128 below 1200 / from 1200 /
    from 2400)."""
    if len(offset_max) != len(offset_thresholds) + 1:
        raise ValueError(f"offset_max needs one more value than offset_thresholds, got "
                         f"{list(offset_max)} and {list(offset_thresholds)}")
    if list(offset_thresholds) != sorted(offset_thresholds):
        raise ValueError(f"offset_thresholds must be ascending, got {list(offset_thresholds)}")
    return int(offset_max[bisect.bisect_right(list(offset_thresholds), short_side)])


def grid_positions(h: int, w: int, crop: int, step: int, offset_max: Sequence[int],
                   offset_thresholds: Sequence[int], jitter: int, align: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Top-left corners of the HGGT crop grid of an h x w image: (N, 2) int64 (y, x), row-major.

    Grid nodes start at a random offset in [0, k] per axis (k from `offset_limit` on the short
    side) and repeat every `step` pixels; each node moves by its own jitter in
    [-jitter, jitter] per axis, is clamped at 0 (as the reference script does) and dropped when
    the crop would pass the bottom or right border. Every coordinate is a multiple of `align`
    (the LR scale, so LR crops are exact): offsets and jitters are drawn as multiples of it.
    With step - 2 * jitter >= crop / 2 two crops overlap by at most half a patch. (HGGT's
    script picks k per axis from that axis' length; DESIGN.md picks it from the short side.)
    """
    if crop < 3 or step < 1 or jitter < 0 or align < 1:
        raise ValueError(f"need crop >= 3, step >= 1, jitter >= 0, align >= 1; got crop={crop}, "
                         f"step={step}, jitter={jitter}, align={align}")
    if crop % align or step % align:
        raise ValueError(f"crop ({crop}) and step ({step}) must be multiples of align ({align}) "
                         f"so that LR crops are exact")
    k = offset_limit(min(h, w), offset_max, offset_thresholds)
    oy, ox = align * rng.integers(0, k // align + 1, size=2)
    yy, xx = np.meshgrid(np.arange(oy, h, step), np.arange(ox, w, step), indexing="ij")
    reach = jitter // align
    moves = align * rng.integers(-reach, reach + 1, size=(yy.size, 2))
    pos = np.maximum(np.stack([yy.ravel(), xx.ravel()], axis=1) + moves, 0)
    inside = (pos[:, 0] + crop <= h) & (pos[:, 1] + crop <= w)
    return pos[inside].astype(np.int64)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB HWC: float32 HxW on the 0-255 scale (not rounded)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB HxWx3 image, got shape {rgb.shape}")
    return cv2.cvtColor(rgb.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)


def texture_grey(image: np.ndarray) -> np.ndarray:
    """The grey image HGGT's patch script measures: Pillow's "L" conversion of uint8 RGB HWC
    (ITU-R 601 weights in fixed point, rounded to integers), uint8 HxW; a 2-D image is
    returned as it is."""
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB HxWx3 or a grey HxW image, got shape {image.shape}")
    return np.asarray(Image.fromarray(np.ascontiguousarray(image, np.uint8)).convert("L"))


def _centred(grey: np.ndarray) -> np.ndarray:
    """Grey minus 128 as float32 HxW: every statistic used here ignores a shift, and centring
    keeps float32 sums of squares accurate (mean^2 no longer dwarfs the variance)."""
    return np.subtract(grey, GREY_CENTRE, dtype=np.float32)


def finest_band(grey: np.ndarray) -> np.ndarray:
    """Finest Laplacian-pyramid band of a float32 HxW image: grey - pyrUp(pyrDown(grey)),
    float32 HxW (cv2's 5-tap Gaussian, reflected borders)."""
    h, w = grey.shape
    return grey - cv2.pyrUp(cv2.pyrDown(grey), dstsize=(w, h))


def _high_pass(grey: np.ndarray, hf_measure: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw, measured) high-frequency images of `hf_measure`, float32 HxW: laplacian_var ->
    the signed 3x3 Laplacian and the same clipped to [0, 255] (what cv2.Laplacian with a CV_8U
    output gives, as HGGT's script asks for); pyramid_std -> `finest_band` twice."""
    if hf_measure == "laplacian_var":
        raw = cv2.Laplacian(grey, cv2.CV_32F)
        return raw, _clip8(raw)
    band = finest_band(grey)
    return band, band


def _clip8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 255.0)


def block_size(crop: int, positions: np.ndarray, limit: int = 16) -> int:
    """Largest b <= limit dividing the crop size and every coordinate: windows are then
    unions of whole b x b blocks (b = 4 for grids aligned to the LR scale 4)."""
    b = int(np.gcd.reduce(np.concatenate([[crop], np.asarray(positions).ravel()])))
    return max(d for d in range(1, min(b, limit) + 1) if b % d == 0)


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Index -1 -> 1 and n -> n - 2 (cv2's default BORDER_REFLECT_101) for idx in [-1, n]."""
    idx = np.abs(idx)
    return np.where(idx > n - 1, 2 * (n - 1) - idx, idx)


class _CropBorderTerms:
    """What turns sums of the whole-image clipped Laplacian into sums of each crop's own.

    cv2.Laplacian of a crop reflects at the crop border: on its top row the missing pixel
    above is the pixel below, so the signed value L there changes by d = g[y+1] - g[y-1]
    (bottom row g[y-1] - g[y+1]; left and right columns the same across x), and the measured
    value from clip(L) to clip(L + d) (clip: to [0, 255], the CV_8U output). The crop's sum
    and sum of squares change by the sums of those changes over its border lines, plus a
    correction at each corner, where a row's and a column's changes meet. d and L depend only
    on the line (an image row or column that is some crop's border) and the pixel, so prefix
    sums along those lines give each crop's change with a few reads. `add_strip` keeps the
    grey and signed Laplacian values on and beside the lines while a strip is in cache.
    """

    def __init__(self, ys: np.ndarray, xs: np.ndarray, crop: int, h: int, w: int) -> None:
        self.h, self.w, self.crop = h, w, crop
        # kind -> (line positions, inside step): the inside neighbour is at line + step
        self.lines = {"top": (np.unique(ys), 1), "bottom": (np.unique(ys + crop - 1), -1),
                      "left": (np.unique(xs), 1), "right": (np.unique(xs + crop - 1), -1)}

        def needed(kinds, n):
            lines = np.concatenate([self.lines[k][0] for k in kinds])
            return np.unique(lines), np.unique(np.concatenate(
                [_reflect(lines - 1, n), lines, _reflect(lines + 1, n)]))

        self.lap_rows, self.grey_rows = needed(("top", "bottom"), h)
        self.lap_cols, self.grey_cols = needed(("left", "right"), w)
        self.row_grey = np.empty((len(self.grey_rows), w), np.float32)
        self.row_lap = np.empty((len(self.lap_rows), w), np.float32)
        self.col_grey = np.empty((h, len(self.grey_cols)), np.float32)
        self.col_lap = np.empty((h, len(self.lap_cols)), np.float32)

    def add_strip(self, grey: np.ndarray, lap: np.ndarray, a0: int, r0: int, r1: int) -> None:
        """Keep the values of image rows [r0, r1) from a strip holding rows
        [a0, a0 + len(grey))."""
        for store, rows, plane in ((self.row_grey, self.grey_rows, grey),
                                   (self.row_lap, self.lap_rows, lap)):
            lo, hi = np.searchsorted(rows, [r0, r1])
            store[lo:hi] = plane[rows[lo:hi] - a0]
        self.col_grey[r0:r1] = np.take(grey[r0 - a0:r1 - a0], self.grey_cols, axis=1)
        self.col_lap[r0:r1] = np.take(lap[r0 - a0:r1 - a0], self.lap_cols, axis=1)

    def _line_values(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """d and the signed whole-image L along each line of `kind`: float32 (lines, length)."""
        lines, step = self.lines[kind]
        if kind in ("top", "bottom"):
            grey, lap, n = self.row_grey, self.row_lap, self.h
            g_at, lap_at = self.grey_rows, self.lap_rows
        else:
            grey, lap, n = self.col_grey.T, self.col_lap.T, self.w
            g_at, lap_at = self.grey_cols, self.lap_cols
        d = (grey[np.searchsorted(g_at, _reflect(lines + step, n))]
             - grey[np.searchsorted(g_at, _reflect(lines - step, n))])
        return d, lap[np.searchsorted(lap_at, lines)]

    def changes(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(change of the sum, change of the sum of squares) per window, float64 (N,)."""
        c = self.crop
        edge = {"top": ys, "bottom": ys + c - 1, "left": xs, "right": xs + c - 1}
        start = {"top": xs, "bottom": xs, "left": ys, "right": ys}  # where the crop meets it
        line = {k: np.searchsorted(v[0], edge[k]) for k, v in self.lines.items()}
        d_sum = np.zeros(len(ys))
        d_sq = np.zeros(len(ys))
        values = {}
        for k in self.lines:
            d, lap = values[k] = self._line_values(k)
            before, after = _clip8(lap).astype(np.float64), _clip8(lap + d).astype(np.float64)
            for out, change in ((d_sum, after - before), (d_sq, after ** 2 - before ** 2)):
                p = np.cumsum(change, axis=1)
                first = np.where(start[k] > 0, p[line[k], start[k] - 1], 0.0)
                out += p[line[k], start[k] + c - 1] - first
        for r in ("top", "bottom"):  # corners: the true value takes both changes at once
            for col in ("left", "right"):
                dv, lap = (v[line[r], edge[col]].astype(np.float64) for v in values[r])
                dh = values[col][0][line[col], edge[r]].astype(np.float64)
                corner = [_clip8(lap + dv + dh), _clip8(lap + dv), _clip8(lap + dh), _clip8(lap)]
                d_sum += corner[0] - corner[1] - corner[2] + corner[3]
                d_sq += corner[0] ** 2 - corner[1] ** 2 - corner[2] ** 2 + corner[3] ** 2
        return d_sum, d_sq


def _window_sums(integral: np.ndarray, ys: np.ndarray, xs: np.ndarray, crop: int) -> np.ndarray:
    """Sum over each crop x crop window from an (H+1, W+1) integral image: (N,) float64."""
    y1, x1 = ys + crop, xs + crop
    return integral[y1, x1] - integral[ys, x1] - integral[y1, xs] + integral[ys, xs]


def _block_means(plane: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of plane and plane^2 over whole block x block blocks (cv2 INTER_AREA, exact
    block averages): float32 (rows // block, cols // block) each."""
    hb, wb = plane.shape[0] // block, plane.shape[1] // block
    plane = plane[:hb * block, :wb * block]
    return (cv2.resize(plane, (wb, hb), interpolation=cv2.INTER_AREA),
            cv2.resize(cv2.multiply(plane, plane), (wb, hb), interpolation=cv2.INTER_AREA))


def _window_moments(image: np.ndarray, hf_measure: str, crop: int, ys: np.ndarray,
                    xs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sums over every window of grey, grey^2, high and high^2 (float64 (N,) each), from one
    pass over the image, plus the crop-border changes of the last two (laplacian_var).

    When every window is made of whole b x b blocks (b = `block_size` > 1), the pass runs in
    strips of about STRIP_ROWS rows, so that each strip's grey, high-pass, squares and block means
    are computed while it sits in the CPU cache, and the integral images are taken over the
    block means: 1/b^2 of the full-size work. Otherwise the integral images are full-size.
    """
    image = texture_grey(image)
    h, w = image.shape[:2]
    laplacian = hf_measure == "laplacian_var"
    border = _CropBorderTerms(ys, xs, crop, h, w) if laplacian else None
    block = block_size(crop, np.stack([ys, xs]))
    if block == 1:
        grey = _centred(image)
        raw, high = _high_pass(grey, hf_measure)
        if border:
            border.add_strip(grey, raw, 0, 0, h)
        sums = []
        for plane in (grey, high):
            s, sq = cv2.integral2(plane, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
            sums += [_window_sums(s, ys, xs, crop), _window_sums(sq, ys, xs, crop)]
    else:
        # A strip's pyramid band is exact 4 rows in from its edges; even starts keep pyrDown
        # on the image's sampling grid.
        halo = 1 if laplacian else 8
        unit = np.lcm(block, 2)
        rows = max(1, STRIP_ROWS // unit) * unit
        means = np.empty((4, h // block, w // block), np.float32)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a0 = max(0, r0 - halo)
            grey = _centred(image[a0:min(h, r1 + halo)])
            raw, high = _high_pass(grey, hf_measure)
            if border:
                border.add_strip(grey, raw, a0, r0, r1)
            q0, q1 = r0 // block, r1 // block
            if q1 > q0:
                core = slice(r0 - a0, r0 - a0 + (q1 - q0) * block)
                means[0:2, q0:q1] = _block_means(grey[core], block)
                means[2:4, q0:q1] = _block_means(high[core], block)
        by, bx, bc, area = ys // block, xs // block, crop // block, block * block
        sums = [area * _window_sums(cv2.integral(m, sdepth=cv2.CV_64F), by, bx, bc)
                for m in means]
    if border:
        d_sum, d_sq = border.changes(ys, xs)
        sums[2] += d_sum
        sums[3] += d_sq
    return tuple(sums)


def _variance(s: np.ndarray, sq: np.ndarray, n: int) -> np.ndarray:
    return np.maximum(sq / n - (s / n) ** 2, 0.0)


def window_stats(image: np.ndarray, positions: np.ndarray, crop: int,
                 hf_measure: str = "laplacian_var") -> tuple[np.ndarray, np.ndarray]:
    """Texture statistics of every crop x crop window at `positions` ((N, 2) int (y, x)), as
    HGGT's patch script measures them crop by crop.

    `image` is uint8 RGB HWC (grey = `texture_grey`, Pillow's "L", as the script) or a 2-D
    uint8 grey image. Returns (std, hf), float64 (N,) each:
    - std: population standard deviation of the window's grey values (cv2.meanStdDev);
    - hf, laplacian_var: variance of cv2.Laplacian(crop, cv2.CV_8U), the 3x3 Laplacian of the
      crop alone (reflected at the crop border) with negative responses clipped to 0 and
      large ones to 255 — the script's measure (a signed Laplacian's variance is ~2.6x larger);
    - hf, pyramid_std: std over the window of `finest_band` of the whole image (a pyramid
      of the crop alone differs only within 4 px of the crop border).
    Both come from one pass over the image and integral images, not crop by crop.
    """
    if hf_measure not in HF_MEASURES:
        raise ValueError(f"unknown hf_measure {hf_measure!r} (known: {', '.join(HF_MEASURES)})")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an RGB HxWx3 or a grey HxW image, got shape {image.shape}")
    if crop < 3:
        raise ValueError(f"crop must be at least 3 pixels, got {crop}")
    h, w = image.shape[:2]
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    ys, xs = positions[:, 0], positions[:, 1]
    if not len(positions):
        return np.zeros(0), np.zeros(0)
    if ys.min() < 0 or xs.min() < 0 or (ys + crop).max() > h or (xs + crop).max() > w:
        raise ValueError(f"a {crop}x{crop} window at the given positions leaves the "
                         f"{w}x{h} image")
    g_sum, g_sq, h_sum, h_sq = _window_moments(image, hf_measure, crop, ys, xs)
    n = crop * crop
    std = np.sqrt(_variance(g_sum, g_sq, n))
    hf = _variance(h_sum, h_sq, n)
    return std, (hf if hf_measure == "laplacian_var" else np.sqrt(hf))


def texture_mask(image: np.ndarray, positions: np.ndarray, crop: int, std_min: float,
                 hf_min: float, hf_measure: str = "laplacian_var") -> np.ndarray:
    """HGGT's texture test for every window: bool (N,), std >= std_min and hf >= hf_min
    (see `window_stats` for the measures)."""
    std, hf = window_stats(image, positions, crop, hf_measure)
    return (std >= std_min) & (hf >= hf_min)


def save_patches(path: Path, image_ids: Sequence[str], xs: Sequence[int], ys: Sequence[int],
                 size: int) -> None:
    """Write patches.npz atomically: image_id ('<U16'), x, y (int32, top-left corner in HR
    pixels) and size (int, the crop side). The order is the sample order downstream."""
    path = Path(path)
    ids = np.asarray(list(image_ids), dtype=object)
    if any(len(str(i)) > 16 for i in ids):
        raise ValueError(f"{path}: image ids must have at most 16 characters")
    x = np.asarray(xs, dtype=np.int64)
    y = np.asarray(ys, dtype=np.int64)
    if not len(ids) == len(x) == len(y):
        raise ValueError(f"{path}: {len(ids)} ids, {len(x)} x and {len(y)} y values")
    if len(x) and (x.min() < 0 or y.min() < 0):
        raise ValueError(f"{path}: negative patch coordinates")
    buffer = io.BytesIO()
    np.savez(buffer, image_id=ids.astype(ID_DTYPE), x=x.astype(np.int32), y=y.astype(np.int32),
             size=np.int64(size))
    durable.write_bytes(path, buffer.getvalue())


def load_patches(path: Path) -> dict:
    """Read patches.npz: {"image_id": '<U16' (N,), "x": int32 (N,), "y": int32 (N,),
    "size": int}. Raises ValueError naming the file when it is not a valid patch list."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read patch list: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a patch list (a single .npy array, not an .npz archive)")
    with data:
        missing = [k for k in PATCH_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: not a patch list, missing {', '.join(missing)}")
        try:
            out = {k: data[k] for k in PATCH_KEYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: cannot read patch list: {e}") from None
    n = len(out["x"])
    if out["image_id"].dtype.kind != "U" or out["x"].dtype != np.int32 or \
            out["y"].dtype != np.int32 or len(out["image_id"]) != n or len(out["y"]) != n or \
            out["size"].ndim != 0:
        raise ValueError(f"{path}: patch arrays have wrong types or lengths")
    out["size"] = int(out["size"])
    return out
