"""A small x`scale` SR network: NAF blocks at LR resolution and a pixel-shuffle upsampler, added
to the bilinear upsampling of the input (so an untrained network is bilinear upsampling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.nafblock import NAFBlock


class SmallSR(nn.Module):
    """(N,3,h,w) LR in [0,1] -> (N,3,h*scale,w*scale)."""

    def __init__(self, width: int = 32, blocks: int = 4, scale: int = 4):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[NAFBlock(width) for _ in range(blocks)])
        self.up = nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, padding=1),
                                nn.PixelShuffle(scale))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(lq, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return base + self.up(self.body(self.head(lq)))
