"""The U-Net discriminator with spectral normalisation of Real-ESRGAN (Wang et al., 2021),
used by HGGT's enhancers: a per-pixel real/fake logit map, so it judges local texture."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _sn_conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, 1, bias=False))


class UNetDiscriminator(nn.Module):
    """(N,3,H,W) float [0,1] -> (N,1,H,W) logits; H and W must be multiples of 8.

    Three stride-2 spectral-norm convs down (n_feats -> 8 n_feats), three bilinear x2 + conv
    steps up, each added to the encoder feature of the same size (skip connections), two more
    convs and a 1-channel head. Paper size: n_feats = 64.
    """

    def __init__(self, n_feats: int = 64, colors: int = 3, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.conv0 = nn.Conv2d(colors, n_feats, 3, padding=1)
        self.down = nn.ModuleList([_sn_conv(n_feats * 2 ** i, n_feats * 2 ** (i + 1), 4, 2)
                                   for i in range(3)])
        self.up = nn.ModuleList([_sn_conv(n_feats * 2 ** (3 - i), n_feats * 2 ** (2 - i), 3)
                                 for i in range(3)])
        self.extra = nn.ModuleList([_sn_conv(n_feats, n_feats, 3) for _ in range(2)])
        self.head = nn.Conv2d(n_feats, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"UNetDiscriminator needs H and W divisible by 8, "
                             f"got {tuple(x.shape)}")
        feats = [F.leaky_relu(self.conv0(x), 0.2)]
        for conv in self.down:
            feats.append(F.leaky_relu(conv(feats[-1]), 0.2))
        y = feats.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = F.leaky_relu(conv(y), 0.2)
            skip = feats.pop()
            if self.skip:
                y = y + skip
        for conv in self.extra:
            y = F.leaky_relu(conv(y), 0.2)
        return self.head(y)
