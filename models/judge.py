"""The pairwise quality judge: which of two versions of a patch is closer to the clean image
that neither of them is? A small CNN that sees both versions and their difference."""

from __future__ import annotations

import torch
from torch import nn


class PairJudge(nn.Module):
    """(a, b) float [0,1] (B,3,H,W) each -> (B, heads): per head, the logit that b is closer
    to the unseen clean image than a (pipeline.quality.judge turns it into dB). Antisymmetric by
    construction, J(a, b) = f(a, b) - f(b, a), so J(a, a) = 0.

    f: a 3x3 conv on [a, b, 4 (b - a)] (9 channels) to `width`, three stride-2 3x3 convs to
    2, 3 and 4 x `width`, global average pooling, a linear layer per head. LeakyReLU 0.2.
    """

    def __init__(self, width: int = 16, heads: int = 3):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(9, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 3 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(3 * w, 4 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.head = nn.Linear(4 * w, heads)

    def one_way(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b, 4 * (b - a)], dim=1)
        return self.head(self.body(x).mean(dim=(2, 3)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.one_way(a, b) - self.one_way(b, a)
