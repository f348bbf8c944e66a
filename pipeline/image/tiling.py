"""Tiled inference: apply a network to an image of any size in overlapping tiles."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


@torch.no_grad()
def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int,
                overlap: int, scale: int = 1) -> torch.Tensor:
    """Apply `fn` (N,C,h,w) -> (N,C',h*scale,w*scale) to `image` (N,C,H,W) tile by tile.

    Neighbouring tiles overlap by `overlap` pixels and each keeps only its interior (half the
    overlap is trimmed on every side that is not the image border), so the result equals the
    whole-image result for any network whose receptive radius is at most overlap / 2: no seams.
    An image that fits in one tile is passed through whole. Returns (N,C',H*scale,W*scale).
    """
    n, _, h, w = image.shape
    if h <= tile and w <= tile:
        return fn(image)
    th, tw, margin = min(tile, h), min(tile, w), overlap // 2
    stride = max(tile - 2 * margin, 1)
    out = None
    for y in _starts(h, th, stride):
        for x in _starts(w, tw, stride):
            piece = fn(image[:, :, y:y + th, x:x + tw])
            if out is None:
                out = piece.new_empty(n, piece.shape[1], h * scale, w * scale)
            y0 = 0 if y == 0 else margin
            x0 = 0 if x == 0 else margin
            y1 = th if y + th == h else th - margin
            x1 = tw if x + tw == w else tw - margin
            out[:, :, (y + y0) * scale:(y + y1) * scale, (x + x0) * scale:(x + x1) * scale] = \
                piece[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale]
    return out
