"""RCAN (Zhang et al., ECCV 2018) without an upsampler: a same-size (1x) image enhancer.

Residual groups of residual channel-attention blocks (RCAB), a long skip over the body, and
an image-level residual: the network predicts a correction that is added to its input.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """Scale each channel by a gate computed from its global mean (squeeze and excitation)."""

    def __init__(self, n_feats: int = 64, reduction: int = 16):
        super().__init__()
        hidden = max(n_feats // reduction, 1)
        self.squeeze = nn.Conv2d(n_feats, hidden, 1)
        self.excite = nn.Conv2d(hidden, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class RCAB(nn.Module):
    """conv-ReLU-conv, channel attention, plus the input."""

    def __init__(self, n_feats: int = 64, reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.attention = ChannelAttention(n_feats, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(torch.relu(self.conv1(x))))


class ResidualGroup(nn.Module):
    """`n_blocks` RCABs and a 3x3 conv, plus the input."""

    def __init__(self, n_feats: int = 64, n_blocks: int = 20, reduction: int = 16):
        super().__init__()
        self.blocks = nn.Sequential(*(RCAB(n_feats, reduction) for _ in range(n_blocks)))
        self.conv = nn.Conv2d(n_feats, n_feats, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class RCAN(nn.Module):
    """(N,3,H,W) float [0,1] -> (N,3,H,W) float (unclipped), for any H, W.

    Paper size (the defaults): 64 channels, 10 groups x 20 RCABs, channel reduction 16. The
    output is the input plus the tail conv's correction; the tail starts at zero, so an
    untrained network is the identity (short CPU trainings then never make images worse than
    their input by a random residual).
    """

    def __init__(self, n_feats: int = 64, n_groups: int = 10, n_blocks: int = 20,
                 reduction: int = 16, colors: int = 3):
        super().__init__()
        self.head = nn.Conv2d(colors, n_feats, 3, padding=1)
        self.body = nn.Sequential(*(ResidualGroup(n_feats, n_blocks, reduction)
                                    for _ in range(n_groups)))
        self.body_conv = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.tail = nn.Conv2d(n_feats, colors, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity (see the class docstring)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.head(x)
        return x + self.tail(feats + self.body_conv(self.body(feats)))
