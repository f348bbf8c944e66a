"""Tiled inference: apply a network to a photo of any size in batches of same-size overlapping
tiles, writing each tile's kept interior into a uint8 host image as it goes.

Memory is set by the tiles, not the photo: the device holds one batch of tiles and its
outputs; the host holds the uint8 input and the uint8 output. Neighbouring tiles overlap by
about `overlap` pixels and the cut between them lies in the middle of their overlap, so every
kept pixel is at least overlap / 2 from a tile edge that is not the image border: for a
network whose receptive radius is at most that, tiled equals whole. Edge tiles are clamped
inside the image, so every tile has the same size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.image.conversions import to_tensor
from pipeline.train.precision import FP32, Precision

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Span:
    """One tile along one axis: input [start, start + size), kept output rows/columns
    [keep0, keep1) in input coordinates (absolute)."""

    start: int
    keep0: int
    keep1: int


def spans(length: int, tile: int, overlap: int, align: int = 1, cut: int = 1) -> list[Span]:
    """Tiles along an axis of `length` (a multiple of `align`): starts are multiples of
    `align`, every tile is min(tile, length) long (tile rounded down to a multiple of
    `align`), the last one is clamped to end at `length`, and the cut between two tiles is the
    middle of their overlap rounded to a multiple of `cut`."""
    size = min(max(tile // align * align, align), length)
    if size == length:
        return [Span(0, 0, length)]
    stride = max((size - overlap) // align * align, align)
    starts = list(range(0, length - size, stride)) + [length - size]
    cuts = [0]
    for a, b in zip(starts, starts[1:], strict=False):
        middle = (b + a + size) // 2  # middle of the overlap [b, a + size)
        cuts.append(min(max(round(middle / cut) * cut, b), a + size))
    cuts.append(length)
    return [Span(s, k0, k1) for s, k0, k1 in zip(starts, cuts[:-1], cuts[1:], strict=True)
            if k1 > k0]


def _pad_to(image: np.ndarray, align: int) -> np.ndarray:
    """Reflect-pad (replicate when too small, as models.elan does) bottom/right to `align`."""
    h, w = image.shape[:2]
    ph, pw = -h % align, -w % align
    if not (ph or pw):
        return image
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)


def tile_outputs(forward: Forward, image: np.ndarray, tile: int, overlap: int, *,
                 scale: int = 1, reduce: int = 1, align: int = 1, batch: int = 4,
                 device: torch.device | str = "cpu"
                 ) -> Iterator[tuple[tuple[slice, slice], torch.Tensor]]:
    """The kept part of every tile's output: ((rows, columns) of the output image, float32
    (3, h, w) on `device`, [0,1] scale unclipped). `forward` maps float [0,1] (B,3,t,t) to
    (B,3,t*scale,t*scale); with `reduce` > 1 each kept output is clipped to [0,1] and
    averaged over reduce x reduce blocks (the output is scale/reduce times the input;
    `image`'s sides times scale must then be multiples of reduce). Tiles of uint8 RGB HWC
    `image` go `batch` at a time."""
    h, w = image.shape[:2]
    if reduce > 1 and (h * scale % reduce or w * scale % reduce):
        raise ValueError(f"tiles: {w}x{h} times {scale} is not a multiple of {reduce}")
    padded = _pad_to(image, align)
    cut = reduce // math.gcd(reduce, scale)
    ys = spans(padded.shape[0], tile, overlap, align, cut)
    xs = spans(padded.shape[1], tile, overlap, align, cut)
    th = padded.shape[0] - ys[-1].start
    tw = padded.shape[1] - xs[-1].start
    jobs = [(y, x) for y in ys for x in xs]
    for i in range(0, len(jobs), batch):
        group = jobs[i:i + batch]
        tiles = [padded[y.start:y.start + th, x.start:x.start + tw] for y, x in group]
        out = forward(to_tensor(np.stack(tiles), device))
        for (y, x), piece in zip(group, out, strict=True):
            y0, y1 = min(y.keep0, h), min(y.keep1, h)
            x0, x1 = min(x.keep0, w), min(x.keep1, w)
            if y1 <= y0 or x1 <= x0:
                continue
            kept = piece[:, (y0 - y.start) * scale:(y1 - y.start) * scale,
                         (x0 - x.start) * scale:(x1 - x.start) * scale]
            if reduce > 1:
                kept = torch.nn.functional.avg_pool2d(kept.clamp(0, 1)[None], reduce)[0]
            yield ((slice(y0 * scale // reduce, y1 * scale // reduce),
                    slice(x0 * scale // reduce, x1 * scale // reduce)), kept)


@torch.no_grad()
def tiled_apply(model: torch.nn.Module | Forward, image: np.ndarray, tile: int, overlap: int,
                precision: Precision = FP32, *, scale: int = 1, reduce: int = 1,
                align: int | None = None, batch: int = 4,
                device: torch.device | str = "cpu") -> np.ndarray:
    """`model` applied to uint8 RGB HWC `image` tile by tile (`tile_outputs`), forward passes
    run by `precision`; `align` defaults to the model's `multiple` (its padding, e.g. ELAN's
    windows), else 1. Returns uint8 RGB HWC (H*scale/reduce, W*scale/reduce), clipped and
    rounded, filled as the tiles come."""
    if align is None:
        align = int(getattr(model, "multiple", 1))
    h, w = image.shape[:2]
    out = np.empty((h * scale // reduce, w * scale // reduce, 3), np.uint8)
    forward = lambda x: precision.forward(model, x)  # noqa: E731
    for (rows, cols), kept in tile_outputs(forward, image, tile, overlap, scale=scale,
                                           reduce=reduce, align=align, batch=batch,
                                           device=device):
        out[rows, cols] = kept.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return out
