"""The conditional frequency mask generator (CFMG) of Ryou et al. (2025): a NAFBlock encoder
that looks at a GT image, its spectrum and a condition c, and predicts for each of `sources`
images a weight per radial frequency ring. pipeline.image.fusion turns the weights into masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.nafblock import NAFBlock


def cfmg_input(gt: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The 7-channel CFMG input: gt (B,3,H,W) float in [0,1]; c (B,) in [0,1].

    Channels: the GT (3), log10(|FFT2(GT)| + 1) with the orthonormal FFT and the DC moved to
    the centre by an fftshift over the two spatial axes only (3), and a constant map of c (1).
    """
    spectrum = torch.fft.fftshift(torch.fft.fft2(gt, norm="ortho"), dim=(-2, -1))
    cond = c.to(gt).view(-1, 1, 1, 1).expand(gt.shape[0], 1, *gt.shape[-2:])
    return torch.cat((gt, torch.log10(spectrum.abs() + 1), cond), dim=1)


class CFMG(nn.Module):
    """(gt (B,3,H,W) in [0,1], c (B,)) -> ring weights (B, sources, bins).

    A 3x3 conv to `width` channels, `stages` stages of one NAFBlock and a stride-2 conv that
    doubles the width, one middle NAFBlock, global average pooling, dropout, then
    Linear(width * 2**stages -> hidden) and Linear(hidden -> sources * bins). The input is
    zero-padded on the right and bottom to a multiple of 2**stages (16 by default). With
    `source_softmax` (BGT's code) the weights are a softmax over the sources per ring, in
    (0,1); without it they are the head's raw output.
    """

    def __init__(self, width: int = 32, stages: int = 4, sources: int = 4, bins: int = 25,
                 hidden: int = 100, dropout: float = 0.2, in_channels: int = 7,
                 source_softmax: bool = True):
        super().__init__()
        self.sources, self.bins, self.multiple = sources, bins, 2 ** stages
        self.source_softmax = source_softmax
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        layers: list[nn.Module] = []
        for i in range(stages):
            ch = width * 2 ** i
            layers += [NAFBlock(ch), nn.Conv2d(ch, 2 * ch, 2, stride=2)]
        self.encoder = nn.Sequential(*layers)
        top = width * 2 ** stages
        self.middle = NAFBlock(top)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(top, hidden), nn.Linear(hidden, sources * bins))

    def forward(self, gt: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = cfmg_input(gt, c)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple))
        x = self.middle(self.encoder(self.intro(x)))
        weights = self.head(x).view(-1, self.sources, self.bins)
        return torch.softmax(weights, dim=1) if self.source_softmax else weights
