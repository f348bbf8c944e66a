"""NAFBlock (Chen et al., "Simple Baselines for Image Restoration", 2022): a residual block
with a depthwise conv, a SimpleGate (channel halves multiplied) instead of an activation,
simplified channel attention, and a gated feed-forward part; no nonlinear activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel of an NCHW tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: (N,2C,H,W) -> (N,C,H,W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """(N,C,H,W) -> (N,C,H,W). `dw_expand` widens the depthwise branch and `ffn_expand` the
    feed-forward branch (both halved again by their SimpleGate); `drop` is dropout on each
    branch. The branch scales `beta` and `gamma` start at zero, so a new block is the identity."""

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2, drop: float = 0.0):
        super().__init__()
        dw, ffn = channels * dw_expand, channels * ffn_expand
        if dw % 2 or ffn % 2:
            raise ValueError(f"NAFBlock: channels*expand must be even, got {dw} and {ffn}")
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        self.drop1 = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.drop2 = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.sca(y))
        x = x + self.drop1(y) * self.beta
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + self.drop2(y) * self.gamma
