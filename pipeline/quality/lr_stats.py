"""How a degraded LR differs from its clean LR: PSNR, SSIM, CIEDE2000 colour shift, noise and
sharpness per image, their distribution over a run, and the stats files that hold them.

Colour differences are CIEDE2000 ΔE on CIELAB (D65) computed by scikit-image.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from skimage import color, metrics

from pipeline.image.patches import luma
from pipeline.image.plots import histograms_png
from pipeline.store import durable

STATS_JSON = "stats.json"
PER_IMAGE_CSV = "per_image.csv"
STAT_NAMES = ("psnr", "ssim", "delta_e", "lowfreq_de", "noise_sigma", "sharpness_ratio")


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB HWC -> float64 CIELAB (D65) HWC."""
    return color.rgb2lab(rgb)


def lowpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass (standard deviation `sigma` pixels, reflected borders), per channel."""
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def delta_e_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 ΔE between two uint8 RGB HWC images: float64 HxW."""
    return color.deltaE_ciede2000(to_lab(a), to_lab(b), channel_axis=-1)


# Immerkær's 3x3 mask (it cancels locally planar signal) and the factor that turns its mean
# absolute response into a white Gaussian noise sigma.
IMMERKAER_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
IMMERKAER_SCALE = np.sqrt(np.pi / 2) / 6.0  # a numpy float64: the product stays float64


def immerkaer_response(y: np.ndarray) -> np.ndarray:
    """|response| of float32 luma `y` to IMMERKAER_MASK, without the one-pixel border: times
    IMMERKAER_SCALE, each pixel's noise sigma estimate (0-255)."""
    return np.abs(cv2.filter2D(y, -1, IMMERKAER_MASK)[1:-1, 1:-1])


def noise_sigma(rgb: np.ndarray) -> float:
    """Standard deviation of white Gaussian noise in the luma (0-255), estimated by
    Immerkær's method (1996): the mean `immerkaer_response`, times IMMERKAER_SCALE."""
    return float(IMMERKAER_SCALE * immerkaer_response(luma(rgb)).mean())


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of the luma: falls with blur, rises with noise/ringing."""
    return float(cv2.Laplacian(luma(rgb), cv2.CV_32F)[1:-1, 1:-1].var())


def image_stats(clean: np.ndarray, degraded: np.ndarray, sigma: float = 8.0) -> dict[str, float]:
    """How `degraded` differs from `clean` (uint8 RGB HWC, same size): PSNR (dB, None if
    identical), SSIM (0-1), delta_e = mean per-pixel CIEDE2000, lowfreq_de = mean CIEDE2000
    of the two images' σ=`sigma` low-passes (the colour/tone shift without texture),
    noise_sigma (Immerkær, 0-255) and sharpness_ratio = Laplacian variance degraded / clean
    (<1 blurrier, >1 noisier or ringing)."""
    win = min(7, *(s - 1 + s % 2 for s in clean.shape[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical images: PSNR is inf, reported as None
        psnr = metrics.peak_signal_noise_ratio(clean, degraded, data_range=255)
    ssim = metrics.structural_similarity(clean, degraded, channel_axis=2, data_range=255,
                                         win_size=win)
    lab_clean, lab_deg = to_lab(clean), to_lab(degraded)
    lowfreq = color.deltaE_ciede2000(lowpass(lab_clean, sigma), lowpass(lab_deg, sigma),
                                     channel_axis=-1)
    return {"psnr": float(psnr) if math.isfinite(psnr) else None, "ssim": float(ssim),
            "delta_e": float(color.deltaE_ciede2000(lab_clean, lab_deg, channel_axis=-1).mean()),
            "lowfreq_de": float(lowfreq.mean()), "noise_sigma": noise_sigma(degraded),
            "sharpness_ratio": sharpness(degraded) / max(sharpness(clean), 1e-6)}


def _distribution(values: Sequence[float]) -> dict[str, float] | None:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return None
    q10, q25, q50, q75, q90 = np.percentile(v, [10, 25, 50, 75, 90])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
            "min": float(v.min()), "p10": float(q10), "median": float(q50),
            "p90": float(q90), "max": float(v.max()), "iqr": float(q75 - q25)}


def summarise(rows: Sequence[Mapping], threshold: float) -> dict:
    """Distribution of every statistic over the images, how many are flagged for colour
    shift (mean ΔE > `threshold`), and the spread of the degradations: standard deviations
    of PSNR, of the noise estimate and of log2(sharpness ratio) across images."""
    dist = {name: _distribution([r[name] for r in rows]) for name in STAT_NAMES}
    if rows and "uncorrected_de" in rows[0]:
        dist["uncorrected_de"] = _distribution([r["uncorrected_de"] for r in rows])
    log_sharp = [math.log2(r["sharpness_ratio"]) for r in rows if r["sharpness_ratio"] > 0]
    return {
        "images": len(rows), "threshold": threshold,
        "flagged": sum(bool(r["shifted"]) for r in rows),
        "metrics": dist,
        "diversity": {"psnr_std_db": (dist["psnr"] or {}).get("std"),
                      "noise_sigma_std": (dist["noise_sigma"] or {}).get("std"),
                      "log2_sharpness_ratio_std": _distribution(log_sharp)["std"]
                      if log_sharp else None},
    }


def stats_png(rows: Sequence[Mapping]) -> bytes:
    """Histograms over the images of PSNR, SSIM, ΔE (before and after colour correction when
    it was applied), the noise estimate and log2 sharpness ratio. PNG bytes."""
    def col(name: str) -> list[float]:
        return [float("nan") if r[name] is None else r[name] for r in rows]

    delta = {"ΔE": col("delta_e")}
    if rows and "uncorrected_de" in rows[0]:
        delta = {"uncorrected": col("uncorrected_de"), "corrected": col("delta_e")}
    panels = {"PSNR (dB)": {"PSNR": col("psnr")}, "SSIM": {"SSIM": col("ssim")},
              "CIEDE2000 mean ΔE": delta,
              "noise σ (Immerkær)": {"noise σ": col("noise_sigma")},
              "log2 sharpness ratio": {"log2": [math.log2(max(v, 1e-6))
                                                for v in col("sharpness_ratio")]}}
    return histograms_png(panels, bins=20)


def save(folder: Path, rows: Sequence[Mapping], summary: Mapping) -> None:
    """stats.json ({"summary", "per_image": {id: stats}}) and per_image.csv (one row per
    image: id, STAT_NAMES, shifted) in `folder`, written durably."""
    durable.write_json(folder / STATS_JSON, {
        "summary": summary,
        "per_image": {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}})
    durable.write_csv(folder / PER_IMAGE_CSV, rows, ["id", *STAT_NAMES, "shifted"])


def load(folder: Path) -> dict | None:
    """The stats.json of a stage folder that wrote one with `save`, else None."""
    path = Path(folder) / STATS_JSON
    if not path.is_file():
        return None
    stats = json.loads(path.read_text())
    return stats if isinstance(stats, dict) and "per_image" in stats else None


def delta_e_values(stats: Mapping) -> np.ndarray:
    """The per-image mean CIEDE2000 ΔE of loaded stats, float64 (images,)."""
    return np.asarray([row["delta_e"] for row in stats["per_image"].values()], np.float64)
