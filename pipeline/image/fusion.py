"""Frequency fusion (Ryou et al., 2025): mix the spectra of S aligned images with radial masks.

    fused = real(IFFT2(ifftshift(sum_i M_i * fftshift(FFT2(I_i, norm="ortho")))))

Masks are in the centred (fftshifted) layout, (B,S,H,W), shared by every colour channel.
Every shift acts on the two spatial axes only (the reference code shifted all axes, which
mixes batch items and colour channels), and the radial grid is centred exactly on the
shifted DC bin, (H//2, W//2) (the reference grid sat half a bin away, so its masks were not
point-symmetric and the imaginary part that real() throws away was not zero).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

BINS = 25


def radial_grid(h: int, w: int, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised radial frequency of every bin in the centred layout: (H,W), 0 at the DC bin
    (index H//2, W//2), 1 at the Nyquist frequency along an axis, sqrt(2) in the corners."""
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, device=device, dtype=dtype)) * 2
    fx = torch.fft.fftshift(torch.fft.fftfreq(w, device=device, dtype=dtype)) * 2
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def ring_centres(bins: int = BINS) -> torch.Tensor:
    """(bins,) ring radii sqrt(2) * (b / (bins-1))**2: dense at low frequencies."""
    t = torch.arange(bins, dtype=torch.float64) / (bins - 1)
    return math.sqrt(2) * t ** 2


def ring_widths(bins: int = BINS) -> torch.Tensor:
    """(bins,) Gaussian ring widths (standard deviations) 0.05 * (1 + 10 * (b / (bins-1))**2)."""
    t = torch.arange(bins, dtype=torch.float64) / (bins - 1)
    return 0.05 * (1 + 10 * t ** 2)


def ring_basis(radius: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Gaussian rings exp(-(r - centre_b)^2 / (2 width_b^2)) at every radius: shape (*radius.shape,
    bins), values in (0,1], same dtype and device as `radius`."""
    centres = ring_centres(bins).to(radius)
    widths = ring_widths(bins).to(radius)
    return torch.exp(-0.5 * ((radius[..., None] - centres) / widths) ** 2)


def radial_basis(h: int, w: int, bins: int = BINS, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The rings on an (H,W) centred frequency grid: (bins,H,W)."""
    return ring_basis(radial_grid(h, w, device, dtype), bins).permute(2, 0, 1)


def masks_from_logits(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Masks (B,S,H,W) in the centred layout from ring weights `logits` (B,S,bins): the mask of
    source i is softmax over sources of sum_b logits[:, i, b] * ring_b, so at every frequency
    the masks are in (0,1) and sum to 1."""
    return _masks(logits, radial_grid(h, w, logits.device, logits.dtype))


def half_masks_from_logits(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The same masks in the rfft2 layout: (B,S,H,W//2+1), DC at [0,0] (the centred masks
    after ifftshift, last axis cut to W//2+1). Row k and row H-k have the same radius, so the
    masks are evaluated on rows 0..H//2 only and mirrored; the ring basis of a size seen
    before is reused (training crops all have one size)."""
    rows = torch.minimum(torch.arange(h), h - torch.arange(h)).to(logits.device)
    if (h // 2 + 1) * (w // 2 + 1) * logits.shape[-1] <= CACHE_LIMIT:
        basis = _quarter_basis(h, w, logits.shape[-1], str(logits.device), logits.dtype)
        quarter = torch.softmax(torch.einsum("bsk,hwk->bshw", logits, basis), dim=1)
    else:
        quarter = _masks(logits, _quarter_radius(h, w, logits.device, logits.dtype))
    return quarter.index_select(2, rows)


CACHE_LIMIT = 1 << 23  # basis elements (32 MB in float32) kept per cached size


def _quarter_radius(h: int, w: int, device, dtype) -> torch.Tensor:
    """Radius at rows 0..H//2 and columns 0..W//2 of the rfft2 grid: (H//2+1, W//2+1)."""
    fy = torch.arange(h // 2 + 1, device=device, dtype=dtype) * (2 / h)
    fx = torch.arange(w // 2 + 1, device=device, dtype=dtype) * (2 / w)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


@functools.lru_cache(maxsize=4)
def _quarter_basis(h: int, w: int, bins: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    return ring_basis(_quarter_radius(h, w, device, dtype), bins)


def _masks(logits: torch.Tensor, radius: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
    """softmax over sources of the ring sums at `radius` (H,W'): (B,S,H,W'), evaluated in
    row blocks of about `chunk` bins so that the (bins,H,W') basis never exists whole."""
    rows = max(1, chunk // radius.shape[1])
    parts = [torch.einsum("bsk,hwk->bshw", logits, ring_basis(radius[y:y + rows], logits.shape[-1]))
             for y in range(0, radius.shape[0], rows)]
    return torch.softmax(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0], dim=1)


def mask_profile(logits: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The masks as a function of the normalised radius: (B,S,R) for `radius` (R,)."""
    basis = ring_basis(radius.to(logits), logits.shape[-1])
    return torch.softmax(torch.einsum("bsk,rk->bsr", logits, basis), dim=1)


def fuse(sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fuse `sources` (B,S,C,H,W) float with `masks` (B,S,H,W) (centred layout, shared by the C
    channels): returns (B,C,H,W), the real part of the inverse FFT of the masked sum of spectra.

    Computed with real FFTs: the spectra of real images are Hermitian, so the real part of the
    inverse FFT equals the inverse real FFT of the mask's even part (M(k) + M(-k)) / 2 times the
    half spectrum. For radial masks the even part is the mask itself. Differentiable.
    """
    if sources.ndim != 5 or masks.shape != (*sources.shape[:2], *sources.shape[-2:]):
        raise ValueError(f"fuse: sources must be (B,S,C,H,W) and masks (B,S,H,W), got "
                         f"{tuple(sources.shape)} and {tuple(masks.shape)}")
    w = sources.shape[-1]
    m = torch.fft.ifftshift(masks, dim=(-2, -1))
    m_neg = torch.roll(torch.flip(m, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))  # M(-k)
    return fuse_half(sources, (0.5 * (m + m_neg))[..., : w // 2 + 1])


def fuse_half(sources: torch.Tensor, half_masks: torch.Tensor) -> torch.Tensor:
    """`fuse` for masks already in the layout of rfft2: (B,S,H,W//2+1), DC at [0,0], and even
    (M(k) = M(-k), true of every radial mask). Returns (B,C,H,W)."""
    h, w = sources.shape[-2:]
    if half_masks.shape != (*sources.shape[:2], h, w // 2 + 1):
        raise ValueError(f"fuse_half: masks must be (B,S,H,W//2+1) for sources "
                         f"{tuple(sources.shape)}, got {tuple(half_masks.shape)}")
    spectra = torch.view_as_real(torch.fft.rfft2(sources, norm="ortho"))  # (B,S,C,H,Wr,2)
    m = half_masks.to(spectra.dtype)[:, :, None, :, :, None]
    mixed = spectra[:, 0] * m[:, 0]
    for i in range(1, sources.shape[1]):
        mixed.addcmul_(spectra[:, i], m[:, i])
    return torch.fft.irfft2(torch.view_as_complex(mixed), s=(h, w), norm="ortho")


def fuse_logits(sources: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """fuse(sources, masks_from_logits(logits, H, W)) without building centred full-size
    masks: the radial masks are evaluated on the rfft2 grid only. (B,S,C,H,W) -> (B,C,H,W)."""
    h, w = sources.shape[-2:]
    return fuse_half(sources, half_masks_from_logits(logits, h, w))


def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Mean spectral power above normalised radius `cutoff` (1 = Nyquist): images (...,H,W)
    -> (...) per image and channel (orthonormal FFT, so comparable across image sizes)."""
    h, w = images.shape[-2:]
    power = torch.fft.fftshift(torch.fft.fft2(images, norm="ortho"), dim=(-2, -1)).abs() ** 2
    band = radial_grid(h, w, images.device, power.dtype) > cutoff
    return power[..., band].mean(-1)


def fuse_photo(sources: list[np.ndarray], logits: torch.Tensor) -> np.ndarray:
    """`fuse_logits` of whole photos, uint8 RGB HWC each (source 0 the GT), with ring weights
    `logits` (1,S,bins): the masks are built once on the rfft2 grid, then one colour channel at
    a time each source's spectrum (float32) is added into the mix and inverted. Photo-size
    memory: the masks (S x H x W/2 float32) and about three single-channel float32 planes.
    Returns uint8 RGB HWC (clipped, rounded)."""
    h, w = sources[0].shape[:2]
    masks = half_masks_from_logits(logits.float().cpu(), h, w)[0]  # (S,H,W//2+1)
    out = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        mixed = None
        for i, image in enumerate(sources):
            plane = torch.from_numpy(np.ascontiguousarray(image[..., c])).float().div_(255)
            spectrum = torch.fft.rfft2(plane, norm="ortho")
            del plane
            spectrum.mul_(masks[i])
            mixed = spectrum if mixed is None else mixed.add_(spectrum)
            del spectrum
        plane = torch.fft.irfft2(mixed, s=(h, w), norm="ortho")
        del mixed
        out[..., c] = plane.clamp_(0, 1).mul_(255).round_().to(torch.uint8).numpy()
    return out
