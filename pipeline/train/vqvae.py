"""Undertrained VQ-VAE-2 degradation (Ito et al., 2025): training step, codebook statistics,
degrading a clean LR image through the model, and colour correction (the LR statistics are
in pipeline.quality.lr_stats).

Conventions: images are uint8 RGB HWC; the model sees float32 NCHW in [-1, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color

from models.vqvae2 import STRIDE, VQVAE2
from pipeline.image.plots import display_tile, figure, figure_png
from pipeline.quality.lr_stats import lowpass, to_lab
from pipeline.train.loop import Training, descend
from pipeline.train.precision import FP32, Precision
from pipeline.train.tiling import tiled_apply

EPOCHS_CSV = "epochs.csv"


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
               beta: float = 0.25, precision: Precision = FP32
               ) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """One step of loss = MSE(reconstruction, x) + beta * commitment on x, float (N,3,H,W) in
    [-1, 1] (sides multiples of 8), the forward pass at `precision` (the codebooks in float32).
    The codebooks move by EMA inside the forward pass.

    Returns the losses and per-step perplexities, and the code indices (top, bottom)."""
    model.train()
    recon, commitment, codes = precision.forward(model, x)
    mse = F.mse_loss(recon, x)
    loss = mse + beta * commitment
    descend(optimizer, loss)
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


class VQVAETraining(Training):
    """A VQ-VAE-2, its Adam and the statistics of its epochs: `step(i, x)` is one `train_step`;
    after every `steps_per_epoch` steps the epoch's row (`EpochStats.row`) joins `epochs`. A
    checkpoint keeps the epoch under way too, so a resumed run finishes it as it would have."""

    def __init__(self, model: VQVAE2, lr: float, beta: float, steps_per_epoch: int):
        self.model, self.beta, self.steps_per_epoch = model, beta, steps_per_epoch
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.stats = EpochStats(model.quantize_t.n_embed)
        self.epochs: list[dict[str, float]] = []

    def step(self, i: int, x: torch.Tensor) -> dict[str, float]:
        """Update i on x, float (N,3,H,W) in [-1, 1]; returns `train_step`'s losses."""
        losses, codes = train_step(self.model, self.opt, x, self.beta, self.precision)
        self.stats.add(losses, codes)
        if (i + 1) % self.steps_per_epoch == 0:
            self.epochs.append(self.stats.row((i + 1) // self.steps_per_epoch))
            self.stats.reset()
        return losses

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "stats": self.stats.state(), "epochs": list(self.epochs)}

    def load_state_dict(self, state: Mapping) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.stats.load(state["stats"])
        self.epochs[:] = state["epochs"]


def build_training(config: Mapping, lr: float, beta: float, steps_per_epoch: int, seed: int,
                   device: torch.device | str = "cpu",
                   precision: Precision = FP32) -> VQVAETraining:
    """The training of a VQ-VAE-2 of size `config` (VQVAE2 keyword arguments), initialised
    from `seed` (same weights on every clean build), on `device`, at `precision`."""
    torch.manual_seed(seed)
    model = precision.prepare(VQVAE2(**config).to(device))
    training = VQVAETraining(model, lr, beta, steps_per_epoch)
    training.precision = precision
    return training


def epochs_png(rows: Sequence[Mapping[str, float]], title: str) -> bytes:
    """Per-epoch curves: MSE, commitment, perplexity and dead codes per level. PNG bytes."""
    epochs = [r["epoch"] for r in rows]
    panels = {"reconstruction MSE": ["mse"], "commitment": ["commitment"],
              "perplexity": ["perplexity_top", "perplexity_bottom"],
              "dead codes": ["dead_top", "dead_bottom"]}
    fig = figure(3.2 * len(panels), 2.8)
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
    return figure_png(fig)


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


class UnitRange(torch.nn.Module):
    """A VQ-VAE-2 seen as an image-to-image network on [0,1] (the tiler's range): x -> its
    reconstruction, mapped from and back to [-1, 1]. `multiple`: tiles start on its latent
    grid (8 pixels)."""

    multiple = STRIDE

    def __init__(self, model: VQVAE2):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * 2 - 1)[0].add(1).mul(0.5)


@torch.no_grad()
def reconstruct(model: VQVAE2, rgb: np.ndarray, device: torch.device | str = "cpu",
                tile: int = 512, overlap: int = 128, precision: Precision = FP32,
                batch: int = 4) -> np.ndarray:
    """Pass a uint8 RGB HWC image through the model in eval mode (codebooks frozen), any size,
    in tiles of `tile` pixels starting on the 8-pixel latent grid, cut in the middle of an
    `overlap` that covers the encoder-decoder's receptive field (pipeline.train.tiling), `batch`
    tiles per forward pass. Returns uint8 RGB HWC of the same size, filled tile by tile."""
    wrapped = precision.prepare(UnitRange(model.eval()))
    return tiled_apply(wrapped, rgb, tile, overlap, precision, batch=batch, device=device)


RECONSTRUCT_AT = ("lr", "hr")


def degraded_lr(model: VQVAE2, hr: np.ndarray, scale: int, reconstruct_at: str = "lr",
                device: torch.device | str = "cpu", tile: int = 512, overlap: int = 128,
                precision: Precision = FP32, batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The clean LR of an HR image (`downsample`) and its VQ-VAE-2 reconstruction at the same
    size, uint8 RGB HWC (H // scale, W // scale). `reconstruct_at` "lr" passes the clean LR
    through the model (Ito et al.); "hr" passes the HR image, the scale the model trained on,
    and downsamples the reconstruction like the clean LR, so the model's blur and artefacts
    shrink by `scale` and the content stays (docs/VQVAE.md). Tiling as in `reconstruct`, in
    model-input pixels."""
    if reconstruct_at not in RECONSTRUCT_AT:
        raise ValueError(f"reconstruct_at must be one of {RECONSTRUCT_AT}, got {reconstruct_at!r}")
    clean = downsample(hr, scale)
    source = clean if reconstruct_at == "lr" else hr
    raw = reconstruct(model, source, device, tile, overlap, precision, batch)
    return clean, raw if reconstruct_at == "lr" else downsample(raw, scale)


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


def examples_png(examples: Sequence[tuple[str, Sequence[np.ndarray]]],
                 columns: Sequence[str], side: int = 96) -> bytes:
    """A grid: one row per (title, images) with the centre `side`-pixel crop of each image
    (uint8 RGB HWC), columns titled by `columns`. PNG bytes."""
    fig = figure(2.0 * len(columns), 2.0 * max(len(examples), 1))
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
    return figure_png(fig)
