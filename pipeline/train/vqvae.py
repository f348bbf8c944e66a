"""Undertrained VQ-VAE-2 degradation (Ito et al., 2025): training step, codebook statistics,
degrading a clean LR image through the model, colour correction and colour/quality metrics.

Conventions: images are uint8 RGB HWC; the model sees float32 NCHW in [-1, 1]. Colour
differences are CIEDE2000 ΔE on CIELAB (D65) computed by scikit-image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color, metrics

from models.vqvae2 import VQVAE2
from pipeline.image.patches import luma

EPOCHS_CSV = "epochs.csv"
STAT_NAMES = ("psnr", "ssim", "delta_e", "lowfreq_de", "noise_sigma", "sharpness_ratio")


def epoch_file(epoch: int) -> str:
    """Name of the checkpoint written after `epoch` (1-based) epochs."""
    return f"epoch-{epoch:02d}.pt"


# ---------------------------------------------------------------- training

def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code-usage histogram: the effective number of codes in use
    (1 = one code for everything, n_embed = all used equally)."""
    p = counts.double() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * p.clamp_min(1e-30).log()).sum()))


def train_step(model: VQVAE2, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               beta: float = 0.25) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """One step of loss = MSE(reconstruction, x) + beta * commitment on x, float (N,3,H,W) in
    [-1, 1] (sides multiples of 8). The codebooks move by EMA inside the forward pass.

    Returns the losses and per-step perplexities, and the code indices (top, bottom)."""
    model.train()
    recon, commitment, codes = model(x)
    mse = F.mse_loss(recon, x)
    loss = mse + beta * commitment
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    n_embed = model.quantize_t.n_embed
    return {"loss": float(loss.detach()), "mse": float(mse.detach()),
            "commitment": float(commitment.detach()),
            "perplexity_top": perplexity(torch.bincount(codes[0].flatten(), minlength=n_embed)),
            "perplexity_bottom": perplexity(torch.bincount(codes[1].flatten(),
                                                           minlength=n_embed))}, codes


class EpochStats:
    """Running means of the losses and code-usage counts over one epoch. `state()` /
    `load(state)` let a resumed training continue an epoch it had started."""

    def __init__(self, n_embed: int):
        self.n_embed = n_embed
        self.reset()

    def reset(self) -> None:
        self.counts = torch.zeros(2, self.n_embed, dtype=torch.long)
        self.sums = {"mse": 0.0, "commitment": 0.0}
        self.steps = 0

    def add(self, losses: Mapping[str, float], codes: tuple[torch.Tensor, torch.Tensor]) -> None:
        for name in self.sums:
            self.sums[name] += losses[name]
        for level, c in enumerate(codes):
            self.counts[level] += torch.bincount(c.flatten(), minlength=self.n_embed).cpu()
        self.steps += 1

    def row(self, epoch: int) -> dict[str, float]:
        """Epoch means of mse and commitment; perplexity of the epoch's code usage and the
        number of dead codes (never chosen during the epoch), per level."""
        row = {"epoch": float(epoch)}
        row.update({k: v / max(self.steps, 1) for k, v in self.sums.items()})
        for level, name in enumerate(("top", "bottom")):
            row[f"perplexity_{name}"] = perplexity(self.counts[level])
            row[f"dead_{name}"] = float((self.counts[level] == 0).sum())
        return row

    def state(self) -> dict:
        return {"counts": self.counts.clone(), "sums": dict(self.sums), "steps": self.steps}

    def load(self, state: Mapping) -> None:
        self.counts = state["counts"].clone().cpu()
        self.sums = {k: float(v) for k, v in state["sums"].items()}
        self.steps = int(state["steps"])


def epochs_png(rows: Sequence[Mapping[str, float]], title: str) -> bytes:
    """Per-epoch curves: MSE, commitment, perplexity and dead codes per level. PNG bytes."""
    from pipeline.report.html import _figure, _png

    epochs = [r["epoch"] for r in rows]
    panels = {"reconstruction MSE": ["mse"], "commitment": ["commitment"],
              "perplexity": ["perplexity_top", "perplexity_bottom"],
              "dead codes": ["dead_top", "dead_bottom"]}
    fig = _figure(3.2 * len(panels), 2.8)
    for i, (name, columns) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for column in columns:
            ax.plot(epochs, [r[column] for r in rows], marker="o", lw=1, label=column)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(columns) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


# ---------------------------------------------------------------- degradation

def downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """Clean LR: the HR image cropped to multiples of `scale` (top-left kept, so LR pixel j
    covers HR pixels [scale*j, scale*j + scale)) and reduced `scale` times with PIL's bicubic
    filter, which widens its kernel by the reduction factor (antialiased, like MATLAB's
    imresize). uint8 RGB HWC (H//scale, W//scale, 3)."""
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    if h == 0 or w == 0:
        raise ValueError(f"image {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    image = Image.fromarray(np.ascontiguousarray(hr[:h, :w]))
    return np.array(image.resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def to_model(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB HWC -> float32 (1,3,H,W) in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return tensor.permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)


def from_model(x: torch.Tensor) -> np.ndarray:
    """float (1,3,H,W) in [-1, 1] -> uint8 RGB HWC (clipped, rounded)."""
    x = x.detach()[0].float().add(1.0).mul(127.5).clamp(0, 255).round()
    return x.byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def reconstruct(model: VQVAE2, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Pass a uint8 RGB HWC image through the model in eval mode (codebooks frozen); any size
    (the model pads to multiples of 8). Returns uint8 RGB HWC of the same size."""
    model.eval()
    return from_model(model(to_model(rgb, device))[0])


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB HWC -> float64 CIELAB (D65) HWC."""
    return color.rgb2lab(rgb)


def lowpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass (standard deviation `sigma` pixels, reflected borders), per channel."""
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def colour_correct(degraded: np.ndarray, clean: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Remove the low-frequency colour and tone difference of `degraded` against `clean`
    (uint8 RGB HWC, same size): in CIELAB, every channel's Gaussian low-pass (σ = `sigma`
    pixels) is replaced by the clean image's, so that
        corrected = degraded - lowpass(degraded) + lowpass(clean)   (L*, a*, b*)
    keeps the degradation's high frequencies (noise, blur, ringing, blocks) while its slowly
    varying colour casts and brightness drifts follow the clean image. uint8 RGB HWC."""
    if degraded.shape != clean.shape:
        raise ValueError(f"degraded {degraded.shape} and clean {clean.shape} differ in size")
    deg, ref = to_lab(degraded), to_lab(clean)
    corrected = deg - lowpass(deg, sigma) + lowpass(ref, sigma)
    with warnings.catch_warnings():  # out-of-gamut colours are clipped below
        warnings.simplefilter("ignore")
        rgb = color.lab2rgb(corrected)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def delta_e_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 ΔE between two uint8 RGB HWC images: float64 HxW."""
    return color.deltaE_ciede2000(to_lab(a), to_lab(b), channel_axis=-1)


def noise_sigma(rgb: np.ndarray) -> float:
    """Standard deviation of white Gaussian noise in the luma (0-255), estimated by
    Immerkær's method (1996): the mean absolute response to the 3x3 mask that cancels
    locally planar signal, times sqrt(pi/2)/6."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(luma(rgb), -1, mask)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) / 6.0 * np.abs(response).mean())


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


# ---------------------------------------------------------------- per-run statistics

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
    from pipeline.report.html import histograms_png

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


def examples_png(examples: Sequence[tuple[str, Sequence[np.ndarray]]],
                 columns: Sequence[str], side: int = 96) -> bytes:
    """A grid: one row per (title, images) with the centre `side`-pixel crop of each image
    (uint8 RGB HWC), columns titled by `columns`. PNG bytes."""
    from pipeline.report.html import _figure, _png, display_tile

    fig = _figure(2.0 * len(columns), 2.0 * max(len(examples), 1))
    for r, (title, images) in enumerate(examples):
        for c, image in enumerate(images):
            ax = fig.add_subplot(len(examples), len(columns), r * len(columns) + c + 1)
            ax.imshow(display_tile(image, side), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
    return _png(fig)
