"""ELAN (Zhang et al., ECCV 2022, "Efficient Long-Range Attention Network") without an
upsampler: a same-size (1x) image enhancer.

Each ELAB block is a local feature extractor (two shift-convs) and a group-wise multi-scale
self-attention (GMSA: the channels are split into one group per window size, attention inside
non-overlapping windows, query = key as in the paper), both residual; every second block
shifts its windows by half a window (the shifted variant; without the paper's wrap-around,
so a tile of a photo sees what the whole photo does away from the tile's edges). The input
is padded to a multiple of the windows' least common multiple (16 for (4, 8, 16)) and the
output cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def shift_channels(x: torch.Tensor) -> torch.Tensor:
    """Move four fifths of the channels by one pixel (left, right, up, down; zero fill), keep
    the rest: ELAN's fixed-weight depthwise shift conv, without the convolution."""
    g = x.shape[1] // 5
    p = F.pad(x, (1, 1, 1, 1))
    return torch.cat([p[:, :g, 1:-1, 2:], p[:, g:2 * g, 1:-1, :-2], p[:, 2 * g:3 * g, 2:, 1:-1],
                      p[:, 3 * g:4 * g, :-2, 1:-1], x[:, 4 * g:]], 1)


class ShiftConv(nn.Module):
    """Channel shift followed by a 1x1 conv: a 3x3 receptive field at 1x1 cost."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(shift_channels(x))


class LFE(nn.Module):
    """Local feature extraction: shift-conv (x expansion), ReLU, shift-conv back."""

    def __init__(self, channels: int = 180, expansion: int = 2):
        super().__init__()
        self.expand = ShiftConv(channels, channels * expansion)
        self.reduce = ShiftConv(channels * expansion, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(torch.relu(self.expand(x)))


class GMSA(nn.Module):
    """Group-wise multi-scale self-attention: 1x1 projection to (query, value) pairs with batch
    norm, one channel group per window size, windowed attention, 1x1 projection out."""

    def __init__(self, channels: int = 180, windows: tuple[int, ...] = (4, 8, 16),
                 shift: bool = False):
        super().__init__()
        if channels % len(windows):
            raise ValueError(f"ELAN channels ({channels}) must divide into {len(windows)} groups")
        self.windows, self.shift = tuple(windows), shift
        self.project_in = nn.Conv2d(channels, 2 * channels, 1)
        self.norm = nn.BatchNorm2d(2 * channels)
        self.project_out = nn.Conv2d(channels, channels, 1)

    def attend(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """(N,2C,H,W) query|value channels -> (N,C,H,W); H and W are multiples of `size`.

        Shifted: the windows move by half a window without wrapping around the image (the
        paper's torch.roll joins opposite edges): the input is zero-padded by half a window
        on every side and partitioned. A padded key is a zero vector, so its logit is 0 and its
        value 0: it only adds exp(0) to the softmax's denominator. An extra value channel that
        is 1 at the keys inside the map yields, per query, the share of the denominator they
        hold; dividing by it is attention with the padding masked out, in the unmasked (fast)
        kernel. The result is cropped back. Away from the image border this is the rolled
        result."""
        b, c2, h, w = x.shape
        c, half = c2 // 2, size // 2 if self.shift else 0
        if half:
            x = F.pad(x, (half, half, half, half))
        hp, wp = x.shape[-2:]
        nh, nw = hp // size, wp // size
        qv = x.view(b, 2, c, nh, size, nw, size).permute(1, 0, 3, 5, 4, 6, 2)
        qv = qv.reshape(2, b, nh * nw, size * size, c)
        q, v = qv[0], qv[1]
        if half:  # a last channel: 0 in the queries and keys, in the values 1 at a key inside
            # the map and 0 in the padding (one head size for all three: the fast kernel)
            inside = _window_keys(h, w, size, half, x.device).to(v.dtype)
            v = torch.cat([v, inside[None, :, :, None].expand(b, -1, -1, 1)], -1)
            q = F.pad(q, (0, 1))
        y = F.scaled_dot_product_attention(q, q, v, scale=1.0)
        if half:
            y = y[..., :c] / y[..., c:]
        y = y.view(b, nh, nw, size, size, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hp, wp)
        return y[..., half:half + h, half:half + w] if half else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.norm(self.project_in(x)).chunk(len(self.windows), dim=1)
        return self.project_out(torch.cat([self.attend(g, s)
                                           for g, s in zip(groups, self.windows, strict=True)], 1))


def _window_keys(h: int, w: int, size: int, half: int, device: torch.device) -> torch.Tensor:
    """(windows, size*size) bool: which positions of each window of an (h,w) map padded by
    `half` on every side are inside the map."""
    inside = torch.zeros(h + 2 * half, w + 2 * half, dtype=torch.bool, device=device)
    inside[half:half + h, half:half + w] = True
    nh, nw = inside.shape[0] // size, inside.shape[1] // size
    return inside.view(nh, size, nw, size).permute(0, 2, 1, 3).reshape(nh * nw, size * size)


class ELAB(nn.Module):
    """x + LFE(x), then + GMSA."""

    def __init__(self, channels: int = 180, expansion: int = 2,
                 windows: tuple[int, ...] = (4, 8, 16), shift: bool = False):
        super().__init__()
        self.lfe = LFE(channels, expansion)
        self.gmsa = GMSA(channels, windows, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.lfe(x)
        return x + self.gmsa(x)


class ELAN(nn.Module):
    """(N,3,H,W) float [0,1] -> (N,3,H,W) float (unclipped), for any H, W.

    Paper size (the defaults): 180 channels, 36 ELABs (odd ones shifted), windows (4, 8, 16),
    LFE expansion 2. As models.rcan.RCAN: output = input + tail correction, the tail starts at
    zero (an untrained network is the identity).
    """

    def __init__(self, channels: int = 180, blocks: int = 36,
                 windows: tuple[int, ...] = (4, 8, 16), expansion: int = 2, colors: int = 3):
        super().__init__()
        self.multiple = math.lcm(*windows)
        self.head = nn.Conv2d(colors, channels, 3, padding=1)
        self.body = nn.Sequential(*(ELAB(channels, expansion, windows, shift=i % 2 == 1)
                                    for i in range(blocks)))
        self.tail = nn.Conv2d(channels, colors, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity (see the class docstring)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:  # reflect as the paper's code does; replicate when the image is too small
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        feats = self.head(x)
        return (x + self.tail(feats + self.body(feats)))[..., :h, :w]
