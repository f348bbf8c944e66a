"""Fusion throughput against the floor of its own FFTs.

    .venv/bin/python -m bench.bench_fusion [--size 512] [--batch 1] [--repeats 15] [--threads N]

Fuses B images from S=4 sources of C=3 channels (the FuseGT case) and reports megapixels of
fused output per second for: the FFT floor (forward real FFT of the (B,S,C,H,W) sources and
the inverse real FFT of the (B,C,H,W) result, nothing else); `fuse` given centred masks;
`fuse_logits` from ring weights (what FuseGT and the training run: masks built on the rfft
grid), with the ring basis cached (training: every crop has one size) and built anew (FuseGT:
the first image of a size); the literal complex formula with fftshifts (the DESIGN's
expression, as a baseline); and the complex FFT floor. All timings are taken interleaved in
one process, best of `repeats`, so machine noise hits every row alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.image.fusion import _quarter_basis, fuse, fuse_logits, masks_from_logits


def literal(sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    spectra = torch.fft.fftshift(torch.fft.fft2(sources, norm="ortho"), dim=(-2, -1))
    mixed = torch.fft.ifftshift((masks[:, :, None] * spectra).sum(1), dim=(-2, -1))
    return torch.fft.ifft2(mixed, norm="ortho").real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b, s, c, n = args.batch, 4, 3, args.size
    torch.manual_seed(0)
    sources = torch.rand(b, s, c, n, n)
    logits = torch.randn(b, s, 25)
    masks = masks_from_logits(logits, n, n)
    half = torch.fft.rfft2(sources[:, 0], norm="ortho")
    full = torch.fft.fft2(sources[:, 0], norm="ortho")
    cases = {
        "FFT floor (rfft2 + irfft2)": lambda: (torch.fft.rfft2(sources, norm="ortho"),
                                               torch.fft.irfft2(half, s=(n, n), norm="ortho")),
        "fuse(sources, masks)": lambda: fuse(sources, masks),
        "fuse_logits, ring basis cached": lambda: fuse_logits(sources, logits),
        "fuse_logits, ring basis built": lambda: (_quarter_basis.cache_clear(),
                                                  fuse_logits(sources, logits)),
        "literal formula (complex, shifts)": lambda: literal(sources, masks),
        "complex FFT floor (fft2 + ifft2)": lambda: (torch.fft.fft2(sources, norm="ortho"),
                                                     torch.fft.ifft2(full, norm="ortho")),
    }
    best = dict.fromkeys(cases, float("inf"))
    with torch.no_grad():
        for fn in cases.values():
            fn()  # warm-up (FFT plans)
        for _ in range(args.repeats):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
    mp = b * n * n / 1e6
    floor = best["FFT floor (rfft2 + irfft2)"]
    print(f"B={b} S={s} C={c} {n}x{n} float32, torch threads={torch.get_num_threads()}, "
          f"best of {args.repeats}")
    print(f"{'case':36s} {'ms':>8s} {'MP/s':>8s} {'x floor':>8s}")
    for name, t in best.items():
        print(f"{name:36s} {t * 1e3:8.2f} {mp / t:8.2f} {t / floor:8.2f}")


if __name__ == "__main__":
    main()
