"""HGGT's single-stage degradation model, I_L = [(I_H * K)_R + V]_J (DESIGN §1).

One pass over an image: blur with a random kernel K (isotropic or rotated anisotropic Gaussian,
or with probability `sinc_prob` a circular sinc), a random resize R (up / down / keep, mode
area / bilinear / bicubic), additive noise V (Gaussian with probability `gaussian_prob`, else
Poisson; grey noise with probability `gray_noise_prob`), JPEG J at a random integer quality,
and one last resize, in the mode drawn for R, straight to the output size: the input size, or
(H // s, W // s) when `final_scale` = s > 1, as HGGT's enhancement and SR training code do.
The image is first cropped at the bottom and right to multiples of s, so that LR pixel j
covers HR pixels [s*j, s*j + s) exactly. The random choices follow Real-ESRGAN's first-order
chain; the operations are the same as BasicSR's per-operation functions, made fast (float32
on the 0-255 scale, separable isotropic blur, noise drawn in float32, table-based exact
Poisson sampling, uint8 after JPEG).

All randomness comes from the `np.random.Generator` passed in: the same generator state gives
byte-identical output.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.image.conversions import to_uint8

INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR,
                 "bicubic": cv2.INTER_CUBIC}
RESIZE_DIRECTIONS = ("up", "down", "keep")


class RecipeError(ValueError):
    """A degradation recipe (a [degradation.<name>] section) has a bad or missing value."""


@dataclass(frozen=True)
class Recipe:
    """The ranges and probabilities of one degradation preset ([degradation.<name>] in luigi.cfg).

    Sigmas are in pixels (blur) or on the 0-255 scale (noise); angles and cut-offs in radians;
    `resize_probs` are the probabilities of up / down / keep.
    """

    kernel_sizes: tuple[int, ...]
    iso_prob: float
    blur_sigma: tuple[float, float]
    sinc_prob: float
    sinc_omega: tuple[float, float]
    resize_probs: tuple[float, float, float]
    resize_range: tuple[float, float]
    resize_modes: tuple[str, ...]
    gaussian_prob: float
    noise_sigma: tuple[float, float]
    poisson_scale: tuple[float, float]
    gray_noise_prob: float
    jpeg_quality: tuple[int, int]
    final_scale: int = 1

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> RecipeError:
            return RecipeError(f"degradation recipe: {field} = {getattr(self, field)!r}: {why}")

        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise bad("kernel_sizes", "needs one or more odd sizes >= 1")
        for field in ("iso_prob", "sinc_prob", "gaussian_prob", "gray_noise_prob"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise bad(field, "a probability must be in [0, 1]")
        for field in ("blur_sigma", "sinc_omega", "resize_range", "noise_sigma",
                      "poisson_scale", "jpeg_quality"):
            lo, hi = getattr(self, field)
            if lo > hi:
                raise bad(field, "needs [low, high] with low <= high")
        if self.blur_sigma[0] <= 0:
            raise bad("blur_sigma", "sigmas must be > 0")
        if self.sinc_omega[0] <= 0 or self.sinc_omega[1] > math.pi + 1e-6:
            raise bad("sinc_omega", "the cut-off must be in (0, pi]")
        if self.resize_range[0] <= 0 or not self.resize_range[0] <= 1.0 <= self.resize_range[1]:
            raise bad("resize_range", "needs 0 < low <= 1 <= high")
        if self.noise_sigma[0] < 0 or self.poisson_scale[0] < 0:
            raise bad("noise_sigma" if self.noise_sigma[0] < 0 else "poisson_scale",
                      "must be >= 0")
        if any(p < 0 for p in self.resize_probs) or abs(sum(self.resize_probs) - 1.0) > 1e-6:
            raise bad("resize_probs", "needs three probabilities (up, down, keep) summing to 1")
        unknown = [m for m in self.resize_modes if m not in INTERPOLATION]
        if not self.resize_modes or unknown:
            raise bad("resize_modes", f"choose from {sorted(INTERPOLATION)}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise bad("jpeg_quality", "needs integer qualities in [1, 100]")
        if self.final_scale < 1:
            raise bad("final_scale", "must be an integer >= 1")

    @classmethod
    def from_section(cls, values: Mapping[str, str], name: str = "degradation") -> Recipe:
        """Build a recipe from a luigi.cfg section: every value is JSON text.

        Raises RecipeError naming the section and the field when one is missing, unknown,
        not JSON or of the wrong type.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [f for f, spec in fields.items()
                   if f not in values and spec.default is dataclasses.MISSING]
        unknown = sorted(set(values) - set(fields))
        if missing or unknown:
            raise RecipeError(f"[{name}]: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
        parsed = {}
        for field, text in values.items():
            try:
                parsed[field] = _coerce(fields[field].type, json.loads(text))
            except (ValueError, TypeError) as e:
                raise RecipeError(f"[{name}] {field} = {text}: {e}") from None
        try:
            return cls(**parsed)
        except RecipeError as e:
            raise RecipeError(f"[{name}] {e}") from None

    def asdict(self) -> dict:
        """The recipe as plain JSON values (for cache keys and manifests)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _coerce(type_text: str, value):
    """Check a JSON value against a Recipe field's annotation and convert it."""
    scalar = {"int": int, "float": float, "str": str}
    if type_text in scalar:
        kind = scalar[type_text]
        if kind is str:
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        if kind is int and not float(value).is_integer():
            raise TypeError(f"expected an integer, got {value!r}")
        return kind(value)
    inner = type_text[len("tuple["):-1].split(", ")
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON list ({type_text})")
    if inner[-1] == "...":
        if not value:
            raise ValueError("expected a non-empty list")
        return tuple(_coerce(inner[0], v) for v in value)
    if len(value) != len(inner):
        raise ValueError(f"expected {len(inner)} values, got {len(value)}")
    return tuple(_coerce(t, v) for t, v in zip(inner, value, strict=True))


@dataclass(frozen=True)
class Draw:
    """The random choices of one degradation (everything except the per-pixel noise)."""

    kernel: str  # iso, aniso or sinc
    kernel_size: int
    sigma_x: float
    sigma_y: float
    theta: float  # radians
    omega: float  # sinc cut-off, radians
    resize: str  # up, down or keep
    resize_scale: float
    resize_mode: str
    noise: str  # gaussian or poisson
    noise_level: float  # Gaussian sigma (0-255) or Poisson scale
    gray_noise: bool
    jpeg_quality: int


def draw(recipe: Recipe, rng: np.random.Generator) -> Draw:
    """Draw the random choices of one degradation from `rng` (Real-ESRGAN's first order)."""
    size = int(recipe.kernel_sizes[rng.integers(len(recipe.kernel_sizes))])
    sigma_x = sigma_y = theta = omega = 0.0
    if rng.uniform() < recipe.sinc_prob:
        kernel, omega = "sinc", float(rng.uniform(*recipe.sinc_omega))
    elif rng.uniform() < recipe.iso_prob:
        kernel = "iso"
        sigma_x = sigma_y = float(rng.uniform(*recipe.blur_sigma))
    else:
        kernel = "aniso"
        sigma_x = float(rng.uniform(*recipe.blur_sigma))
        sigma_y = float(rng.uniform(*recipe.blur_sigma))
        theta = float(rng.uniform(-math.pi, math.pi))
    direction = RESIZE_DIRECTIONS[rng.choice(3, p=np.asarray(recipe.resize_probs) /
                                             sum(recipe.resize_probs))]
    lo, hi = recipe.resize_range
    scale = {"up": lambda: rng.uniform(1.0, hi), "down": lambda: rng.uniform(lo, 1.0),
             "keep": lambda: 1.0}[direction]()
    mode = recipe.resize_modes[rng.integers(len(recipe.resize_modes))]
    if rng.uniform() < recipe.gaussian_prob:
        noise, level = "gaussian", float(rng.uniform(*recipe.noise_sigma))
    else:
        noise, level = "poisson", float(rng.uniform(*recipe.poisson_scale))
    gray = bool(rng.uniform() < recipe.gray_noise_prob)
    quality = int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1], endpoint=True))
    return Draw(kernel, size, sigma_x, sigma_y, theta, omega, direction, float(scale), mode,
                noise, level, gray, quality)


# ------------------------------------------------------------------------------ kernels

def _grid(size: int) -> np.ndarray:
    half = size // 2
    return np.arange(-half, half + 1, dtype=np.float64)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Normalised 2-D Gaussian (size x size, float32) with axis sigmas `sigma_x`, `sigma_y`
    (pixels), rotated by `theta` radians (BasicSR's bivariate_Gaussian)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T)
    x = _grid(size)
    xx, yy = np.meshgrid(x, x)
    k = np.exp(-0.5 * (inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy
                       + inv[1, 1] * yy * yy))
    return (k / k.sum()).astype(np.float32)


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps (float32): the isotropic kernel is its outer product."""
    x = _grid(size)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(size: int, omega: float) -> np.ndarray:
    """Normalised circular low-pass (2-D sinc / Airy) kernel with cut-off `omega` radians
    (BasicSR's circular_lowpass_kernel), size x size float32."""
    from scipy.special import j1

    x = _grid(size)
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega * j1(omega * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = omega ** 2 / (4 * np.pi)
    return (k / k.sum()).astype(np.float32)


def blur(rgb: np.ndarray, d: Draw) -> np.ndarray:
    """Convolve uint8 RGB HWC with the drawn kernel (reflect-101 borders): float32, 0-255."""
    if d.kernel == "iso":
        taps = gaussian_1d(d.kernel_size, d.sigma_x)
        return cv2.sepFilter2D(rgb, cv2.CV_32F, taps, taps)
    k = (sinc_kernel(d.kernel_size, d.omega) if d.kernel == "sinc"
         else gaussian_kernel(d.kernel_size, d.sigma_x, d.sigma_y, d.theta))
    # filter2D is ~4x faster float32 -> float32 than uint8 -> float32.
    return cv2.filter2D(rgb.astype(np.float32), -1, k)


# ------------------------------------------------------------------------------ noise

_GUIDE_BITS = 12  # guide cells per level: 4096
_LITTLE = np.little_endian


@functools.lru_cache(maxsize=16)
def _poisson_tables(vals: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Inverse-CDF tables for Poisson(k * vals / 255), k = 0..255.

    Returns (guide, cdf, width): cdf (256 * width, float64) is P(X <= j) per level, with the
    last entry set to 1 (the mass beyond it is < 1e-20); guide (256 * 4096, int16) gives for
    the u-cell [c/4096, (c+1)/4096) the answer j when it is the same for the whole cell, else
    ~j for the smallest candidate j.
    """
    from scipy.stats import poisson

    lam = np.arange(256) * (vals / 255.0)
    width = int(vals + 14 * math.sqrt(vals) + 40)
    cdf = poisson.cdf(np.arange(width)[None, :], lam[:, None])
    cdf[:, -1] = 1.0
    cells = 1 << _GUIDE_BITS
    edges = np.arange(cells + 1) / cells
    guide = np.empty((256, cells), np.int16)
    for k in range(256):
        lo = np.searchsorted(cdf[k], edges[:-1], side="right")  # min j with cdf > c / cells
        pure = cdf[k, lo] >= edges[1:]
        guide[k] = np.where(pure, lo, ~lo)
    return guide.ravel(), cdf.ravel(), width


def poisson_counts(levels: np.ndarray, vals: int, rng: np.random.Generator) -> np.ndarray:
    """Exact Poisson(levels * vals / 255) draws for a uint8 array (int16, same shape).

    Inverse-transform sampling with a guide table: a uniform u in [0, 1) with 53 random bits
    per pixel picks X = min{j : P(X <= j) > u}. For the ~98% of pixels whose u-cell holds a
    single answer, that is one table read; the rest step along the CDF. The result has the
    Poisson distribution to float64 precision (it is not an approximation); it is about 4x
    faster than numpy's per-pixel Generator.poisson.
    """
    guide, cdf, width = _poisson_tables(vals)
    raw = rng.bit_generator.random_raw(levels.size)
    flat = levels.reshape(-1).astype(np.intp)
    index = flat << _GUIDE_BITS
    # the cell is the top 12 bits of each 64-bit word (little-endian: its 4th 16-bit part)
    cell = raw.view(np.uint16)[3::4] if _LITTLE else (raw >> np.uint64(48)).astype(np.uint16)
    index += cell >> np.uint16(16 - _GUIDE_BITS)
    out = guide[index]
    mixed = np.flatnonzero(out < 0)
    if mixed.size:
        j = ~out[mixed].astype(np.intp)
        u = (raw[mixed] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        base = flat[mixed] * width
        todo = np.arange(mixed.size)
        while todo.size:
            todo = todo[cdf[base[todo] + j[todo]] <= u[todo]]
            j[todo] += 1
        out[mixed] = j
    return out.reshape(levels.shape)


def add_noise(x: np.ndarray, d: Draw, rng: np.random.Generator) -> np.ndarray:
    """Add the drawn noise to a float32 RGB image on the 0-255 scale, in place; returns x.

    Gaussian: sigma on the 0-255 scale. Poisson (BasicSR's definition): the image rounded to
    8 bits, with `vals` = the number of distinct values rounded up to a power of two, gives
    counts ~ Poisson(x * vals / 255); the noise is (counts * 255 / vals - x) * scale. Grey
    noise is one plane (for Poisson, of the image's luma) added to all three channels.
    """
    h, w = x.shape[:2]
    if d.noise == "gaussian":
        noise = rng.standard_normal((h, w) if d.gray_noise else (h, w, 3), dtype=np.float32)
        noise *= np.float32(d.noise_level)
    else:
        levels = to_uint8(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) if d.gray_noise else x)
        distinct = int(np.count_nonzero(np.bincount(levels.reshape(-1), minlength=256)))
        vals = 1 << max(0, math.ceil(math.log2(distinct)))
        noise = poisson_counts(levels, vals, rng).astype(np.float32)
        noise *= np.float32(255.0 / vals)
        noise -= levels
        noise *= np.float32(d.noise_level)
    x += noise[:, :, None] if d.gray_noise else noise
    return x


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of uint8 RGB HWC at integer `quality` (colours converted for the codec)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed (quality {quality})")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------ the chain

def apply(rgb: np.ndarray, d: Draw, rng: np.random.Generator, final_scale: int = 1) -> np.ndarray:
    """Degrade uint8 RGB HWC with the choices `d`; per-pixel noise is drawn from `rng`.

    Returns uint8 RGB HWC of the input size, or (H // final_scale, W // final_scale): the
    input is cropped at the bottom and right to multiples of `final_scale` first, so that the
    output is aligned with it (LR pixel j covers HR pixels [s*j, s*j + s)).
    """
    s = final_scale
    h, w = (rgb.shape[0] // s) * s, (rgb.shape[1] // s) * s
    x = blur(np.ascontiguousarray(rgb[:h, :w]), d)
    size = (max(1, int(w * d.resize_scale)), max(1, int(h * d.resize_scale)))
    if size != (w, h):
        x = cv2.resize(x, size, interpolation=INTERPOLATION[d.resize_mode])
    out = jpeg(to_uint8(add_noise(x, d, rng)), d.jpeg_quality)
    if size != (w // s, h // s):
        out = cv2.resize(out, (w // s, h // s), interpolation=INTERPOLATION[d.resize_mode])
    return out


def degrade(rgb: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """HGGT's I_L = [(I_H * K)_R + V]_J on one image.

    rgb: uint8 RGB HWC. Returns uint8 RGB HWC of the same size, or of size
    (H // s, W // s) when recipe.final_scale = s > 1. Every random draw comes from `rng`.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"degrade expects uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    s = recipe.final_scale
    if rgb.shape[0] < s or rgb.shape[1] < s:
        raise ValueError(f"a {rgb.shape[1]}x{rgb.shape[0]} image is smaller than "
                         f"final_scale={s}")
    return apply(rgb, draw(recipe, rng), rng, s)
