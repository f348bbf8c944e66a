"""Fusion throughput against the floor of its own FFTs, for inference and for training.

    .venv/bin/python -m bench.bench_fusion [--size 512] [--batch 1] [--repeats 16] [--threads N]
        [--profile]

Fuses B images from S=4 sources of C=3 channels (the FuseGT case) and reports megapixels of
fused output per second. Inference cases (under `torch.no_grad`, as FuseGT runs): the FFT
floor (forward real FFT of the (B,S,C,H,W) sources and inverse real FFT of the (B,C,H,W)
result, nothing else); `fuse` given centred masks; `fuse_logits` from ring weights (masks
built on the rfft grid) with the ring basis cached (every crop of one size) and built anew
(FuseGT: the first image of a size); the literal complex formula with fftshifts (the
DESIGN's expression, as a baseline); the complex FFT floor. Training cases (gradients on, as
pipeline.train.cfmg runs it): `fuse_logits` with the basis cached, forward and backward
(logits require grad, the sources do not; loss = MSE against source 0; backward to the
logits), against the training FFT floor: the FFTs a forward and backward pass cannot avoid,
the forward floor plus the real FFT of the (B,C,H,W) gradient (the backward of irfft2).
All cases run once per repeat in a rotating order (bench.rotation: balanced Latin square,
8 repeats = one cycle); figures are medians with the min-max spread, ratios to the floor the
median (min-max) of per-repeat ratios.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.rotation import cycle_length, ratio, rotate, spread, timed
from pipeline.image.fusion import _quarter_basis, fuse, fuse_logits, masks_from_logits

FLOOR, TRAIN_FLOOR = "FFT floor (rfft2 + irfft2)", "training FFT floor (+ rfft2 of the gradient)"


def literal(sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The DESIGN formula as written: complex FFT, fftshift, masked sum, ifftshift, real part."""
    spectra = torch.fft.fftshift(torch.fft.fft2(sources, norm="ortho"), dim=(-2, -1))
    mixed = torch.fft.ifftshift((masks[:, :, None] * spectra).sum(1), dim=(-2, -1))
    return torch.fft.ifft2(mixed, norm="ortho").real


def inference(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` run under torch.no_grad (FuseGT's case)."""

    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


def training_step(sources: torch.Tensor, logits: torch.Tensor) -> None:
    """Forward and backward of the fusion as a CFMG step runs it: gradients reach `logits`."""
    logits.grad = None
    loss = F.mse_loss(fuse_logits(sources, logits), sources[:, 0])
    loss.backward()


def cases(b: int, n: int) -> tuple[dict[str, Callable[[], object]], set[str]]:
    """The timed cases for B=b images of n x n, and the names of the training ones."""
    torch.manual_seed(0)
    sources = torch.rand(b, 4, 3, n, n)
    logits = torch.randn(b, 4, 25)
    train_logits = logits.clone().requires_grad_(True)
    masks = masks_from_logits(logits, n, n)
    half = torch.fft.rfft2(sources[:, 0], norm="ortho")
    full = torch.fft.fft2(sources[:, 0], norm="ortho")
    grad = torch.rand(b, 3, n, n)

    def floor() -> object:
        return torch.fft.rfft2(sources, norm="ortho"), torch.fft.irfft2(half, s=(n, n),
                                                                      norm="ortho")

    out = {
        FLOOR: inference(floor),
        "fuse(sources, masks)": inference(lambda: fuse(sources, masks)),
        "fuse_logits, ring basis cached": inference(lambda: fuse_logits(sources, logits)),
        "fuse_logits, ring basis built": inference(lambda: (_quarter_basis.cache_clear(),
                                                            fuse_logits(sources, logits))),
        "literal formula (complex, shifts)": inference(lambda: literal(sources, masks)),
        "complex FFT floor (fft2 + ifft2)": inference(lambda: (
            torch.fft.fft2(sources, norm="ortho"), torch.fft.ifft2(full, norm="ortho"))),
        TRAIN_FLOOR: inference(lambda: (floor(), torch.fft.rfft2(grad, norm="ortho"))),
        "training: fuse_logits cached, forward + backward": lambda: training_step(
            sources, train_logits),
    }
    return out, {TRAIN_FLOOR, "training: fuse_logits cached, forward + backward"}


def profile_training(fn: Callable[[], object], steps: int = 10) -> None:
    """Print torch.profiler's table (self CPU time per op) over `steps` training calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=16, help="repeats (a multiple of 8 = "
                    "whole cycles of the rotation)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true", help="also profile 10 training steps")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b, n = args.batch, args.size
    fns, training = cases(b, n)
    for fn in fns.values():
        fn()  # warm-up (FFT plans, the cached basis)
    runs = rotate({k: timed(fn) for k, fn in fns.items()}, args.repeats)
    wall = {k: [t.wall for t in v] for k, v in runs.items()}
    mp = b * n * n / 1e6
    print(f"B={b} S=4 C=3 {n}x{n} float32, torch threads={torch.get_num_threads()}, "
          f"{args.repeats} repeats, {len(fns)} cases in rotating order "
          f"({cycle_length(len(fns))} per cycle); median (min-max)\n")
    print("| case | grad | ms | MP/s | x its floor |")
    print("|---|---|---|---|---|")
    for name, t in wall.items():
        floor = wall[TRAIN_FLOOR if name in training else FLOOR]
        grad = "yes (fwd + bwd)" if name in training and name != TRAIN_FLOOR else "no"
        print(f"| {name} | {grad} | {spread(t).scaled(1e3).fmt('.2f')} | "
              f"{spread(t).inverse(mp).fmt('.1f')} | {ratio(t, floor).fmt('.2f', 'x')} |")
    if args.profile:
        profile_training(fns["training: fuse_logits cached, forward + backward"])


if __name__ == "__main__":
    main()
