"""gtforge's offline annotator: a pairwise judge learned from the corpus alone.

The question a label answers is "is this candidate closer to the clean photo than the
original?", and no clean photo exists. The judge learns it one level up, where the answer is
known: a crop of the corpus, shrunk a little (area downscaling averages noise and blur away,
so it is cleaner than the corpus itself), is the *base*; the judged *input* is the base mildly
degraded (blur, noise, JPEG: the residual flaws of a good photo) or the base itself, and
versions are made from the input the ways the build makes candidates (the build's own trained
enhancers and SR model, sharpening, smoothing, more degradation). Each pair (input, version) is
labelled by how much closer the version is to the base than the input. The network
(models.judge.PairJudge) sees only the two images, like an annotator.

Three heads, three annotators (HGGT's three people): the distance to the base in PSNR, in SSIM
(as dB: -10 log10(1 - SSIM)) and in PSNR of the gradient magnitude (edges). Each outputs, in dB
of its distance, how much closer the second image is; a head votes Positive above its margin,
Negative below minus it. Margins are calibrated on held-out pairs of an input and a
generator's output for it (the pair a label is asked of), never on a benchmark. Images are
uint8 RGB HWC; tensors float32 [0,1] NCHW.

Here: the heads' distances (`closeness`), the versions of a base, judging with a trained judge
(`judge`, `in_db`) and calibrating its margins (`calibrate`). Its training (the pool of versions,
pairs, loss and step: JudgeTraining) is pipeline.train.judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.image import degrade
from pipeline.image.conversions import to_tensor, to_uint8

if TYPE_CHECKING:
    import torch

    from models.judge import PairJudge

HEADS = ("psnr", "ssim", "edges")
# Soft labels: P(b closer) = sigmoid(gain_dB / TEMPERATURE); the judge outputs that logit.
TEMPERATURE = 0.25
MAX_DB = 60.0


# ---------------------------------------------------------------- distances

def _ssim(x: np.ndarray, ref: np.ndarray) -> float:
    """Mean SSIM of the luma (Gaussian window sigma 1.5, the usual constants), on 0-255."""
    a = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY).astype(np.float64)
    blur = lambda v: cv2.GaussianBlur(v, (0, 0), 1.5)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(((2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) *
                                                        (va + vb + c2))).mean())


def gradient_magnitude(grey: np.ndarray) -> np.ndarray:
    """|Sobel gradient| of a float32 grey image. Written with numpy rather than cv2.magnitude,
    whose result depends on the array's memory alignment (its SIMD part fuses the
    multiply-add, its scalar part does not), which made builds differ from run to run."""
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return np.sqrt(gx * gx + gy * gy)


def _edges(x: np.ndarray) -> np.ndarray:
    return gradient_magnitude(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32))


def _db(error: float, peak: float) -> float:
    """10 log10(peak / error), at most MAX_DB (identical images)."""
    return 10.0 * math.log10(peak / max(error, peak * 10 ** (-MAX_DB / 10)))


def closeness(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """How close x is to ref under each head's distance, in dB (higher = closer): float64
    (3,) = (PSNR, -10 log10(1 - SSIM), PSNR of the Sobel gradient magnitude)."""
    mse = float(np.mean((x.astype(np.float64) - ref.astype(np.float64)) ** 2))
    edge_mse = float(np.mean((_edges(x) - _edges(ref)) ** 2))
    return np.array([_db(mse, 255.0 ** 2), _db(1.0 - _ssim(x, ref), 1.0),
                     _db(edge_mse, (4 * 255.0) ** 2)])


# ---------------------------------------------------------------- versions of a base

@dataclass(frozen=True)
class VersionRanges:
    """How versions of a base are made (TrainJudge `versions`): a *degradation* applies each of
    blur (Gaussian sigma, px), noise (Gaussian sigma on 0-255; grey one time in three) and
    JPEG (quality) with probability `p`; a *processing step* is one of those three, sharpening,
    smoothing or rescaling."""

    blur: tuple[float, float] = (0.3, 1.5)
    noise: tuple[float, float] = (1.0, 8.0)
    jpeg: tuple[int, int] = (60, 95)
    p: float = 0.6


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return to_uint8(cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), sigma))


def add_noise(rgb: np.ndarray, sigma: float, grey: bool, rng: np.random.Generator) -> np.ndarray:
    shape = rgb.shape[:2] + ((1,) if grey else (3,))
    return to_uint8(rgb + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma))


def sharpen(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unsharp mask, sigma U[0.5, 2] px, amount U[0.2, 2]."""
    x = rgb.astype(np.float32)
    soft = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 2.0))
    return to_uint8(x + rng.uniform(0.2, 2.0) * (x - soft))


def smooth(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Edge-preserving smoothing (bilateral, 5 px, colour sigma U[10, 50])."""
    return cv2.bilateralFilter(np.ascontiguousarray(rgb), 5, rng.uniform(10, 50),
                               rng.uniform(1, 3))


def rescale(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down by U[0.5, 0.9] and back up (area/bilinear/bicubic down, bilinear/bicubic up)."""
    h, w = rgb.shape[:2]
    f = rng.uniform(0.5, 0.9)
    down = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)[rng.integers(3)]
    small = cv2.resize(rgb, (max(1, int(w * f)), max(1, int(h * f))), interpolation=down)
    return cv2.resize(small, (w, h), interpolation=(cv2.INTER_LINEAR, cv2.INTER_CUBIC)[
        rng.integers(2)])


def degraded(base: np.ndarray, ranges: VersionRanges, rng: np.random.Generator) -> np.ndarray:
    """The base blurred, noised and JPEG-compressed, each with probability ranges.p."""
    x = base
    if rng.uniform() < ranges.p:
        x = blur(x, rng.uniform(*ranges.blur))
    if rng.uniform() < ranges.p:
        x = add_noise(x, rng.uniform(*ranges.noise), rng.uniform() < 1 / 3, rng)
    if rng.uniform() < ranges.p:
        x = degrade.jpeg(x, int(rng.integers(ranges.jpeg[0], ranges.jpeg[1] + 1)))
    return x


def processed(x: np.ndarray, ranges: VersionRanges, rng: np.random.Generator) -> np.ndarray:
    """x after one random step: blur, noise or JPEG within `ranges`, sharpening, smoothing or
    rescaling."""
    steps = (lambda v: blur(v, rng.uniform(*ranges.blur)),
             lambda v: add_noise(v, rng.uniform(*ranges.noise), rng.uniform() < 1 / 3, rng),
             lambda v: degrade.jpeg(v, int(rng.integers(ranges.jpeg[0], ranges.jpeg[1] + 1))),
             lambda v: sharpen(v, rng), lambda v: smooth(v, rng), lambda v: rescale(v, rng))
    return steps[rng.integers(len(steps))](x)


# ---------------------------------------------------------------- scoring

def in_db(logits: torch.Tensor) -> torch.Tensor:
    """The judge's logits as the gain they stand for, in dB (logit = gain / TEMPERATURE)."""
    return logits * TEMPERATURE


def judge(model: PairJudge, originals: np.ndarray, candidates: np.ndarray,
          device: torch.device | str = "cpu", batch: int = 32) -> np.ndarray:
    """How much closer each candidate is than its original, per head, in dB: originals uint8
    (N,H,W,3), candidates (N,K,H,W,3) -> float32 (N,K,3). The judge sees the whole patch."""
    import torch

    model.eval()
    n, k = candidates.shape[:2]
    flat_o = np.repeat(originals, k, axis=0)
    flat_c = candidates.reshape(n * k, *candidates.shape[2:])
    out = np.empty((n * k, len(HEADS)), np.float32)
    with torch.no_grad():
        for s in range(0, n * k, batch):
            out[s:s + batch] = in_db(model(to_tensor(flat_o[s:s + batch], device),
                                           to_tensor(flat_c[s:s + batch], device))).cpu().numpy()
    return out.reshape(n, k, len(HEADS))


def calibrate(predicted: np.ndarray, gain: np.ndarray, precision: float = 0.9,
              floor: float = 0.1) -> np.ndarray:
    """Per head, the smallest margin m >= floor (dB) at which held-out pairs called better
    (prediction > m) are really better by more than `floor` in that head's distance at least
    `precision` of the time, and likewise for worse (< -m); the larger of the two. predicted
    and gain (N,3) dB. Returns (3,) margins; a head that never gets there gets the largest
    prediction (it then never votes)."""
    margins = []
    for h in range(predicted.shape[1]):
        need = [one_sided_margin(sign * predicted[:, h], sign * gain[:, h], precision, floor)
                for sign in (1.0, -1.0)]
        margins.append(max(floor, *need))
    return np.asarray(margins)


def one_sided_margin(p: np.ndarray, g: np.ndarray, precision: float, floor: float) -> float:
    """The smallest m >= floor with mean(g[p > m] > floor) >= precision, for predictions p
    and true gains g of one sign (negate both for "worse"); the largest |p| where no m is."""
    order = np.argsort(-p)
    p, right = p[order], (g[order] > floor).astype(np.float64)
    called = p > floor
    p, right = p[called], right[called]
    share = np.cumsum(right) / np.arange(1, len(p) + 1)  # precision of "the top i+1 pairs"
    # a margin just below p[i] calls the pairs 0..i; keep the largest such set that is precise
    ok = np.flatnonzero(share >= precision)
    if not len(ok):
        return float(np.abs(p).max(initial=floor))
    i = ok[-1]
    return float(p[i + 1]) if i + 1 < len(p) else floor
