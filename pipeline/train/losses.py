"""The enhancers' losses: L1 (torch's `F.l1_loss`), VGG19 perceptual and vanilla GAN.

VGG19 weights are never downloaded: `load_vgg19(path)` reads torchvision's file
(`vgg19-dcbb9e9d.pth`, a state dict with `features.<i>.weight/bias` keys; the `classifier.*`
keys are ignored) with `torch.load(weights_only=True)`. The conv widths are read from the file,
so the same code loads the real network and the narrow copies the tests save. Without a file the
enhancers train with no perceptual term (docs/ENHANCERS.md). The terms' weights
(`LossWeights`) and the file's name and check are in pipeline.train.loss_settings, which
needs no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.train.loop import load_checkpoint
from pipeline.train.loss_settings import require_vgg19_file

# torchvision's VGG19 'features' (configuration E): conv widths, "M" = 2x2 max pooling.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
             512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# HGGT / Real-ESRGAN layer weights (features before the ReLU of each named conv).
DEFAULT_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0,
                         "conv5_4": 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_layer_names() -> list[tuple[str, int]]:
    """(name, index in torchvision's vgg19().features) of every conv and pool: conv1_1 -> 0,
    conv1_2 -> 2, pool1 -> 4, ..., conv5_4 -> 34, pool5 -> 36."""
    names, index, block, conv = [], 0, 1, 1
    for item in VGG19_CFG:
        if item == "M":
            names.append((f"pool{block}", index))
            index, block, conv = index + 1, block + 1, 1
        else:
            names.append((f"conv{block}_{conv}", index))
            index, conv = index + 2, conv + 1  # the conv and its ReLU
    return names


def vgg19_features(state: Mapping[str, torch.Tensor], last: str = "conv5_4",
                   source: str = "the state dict") -> nn.Sequential:
    """torchvision's VGG19 `features` up to conv `last` (inclusive, before its ReLU), with the
    weights of `state` (torchvision key layout, `features.<i>.weight` / `.bias`). The conv
    widths come from the tensors. Raises ValueError naming `source` if a key is missing or a
    shape does not chain."""
    layers: list[nn.Module] = []
    channels = 3
    for name, index in vgg19_layer_names():
        if name.startswith("pool"):
            layers.append(nn.MaxPool2d(2))
            continue
        weight = state.get(f"features.{index}.weight")
        if weight is None or f"features.{index}.bias" not in state:
            raise ValueError(f"{source}: no features.{index}.weight/bias ({name}): not a "
                             f"torchvision VGG19 state dict (keys start {sorted(state)[:4]})")
        if weight.ndim != 4 or weight.shape[1] != channels or tuple(weight.shape[2:]) != (3, 3):
            raise ValueError(f"{source}: features.{index}.weight ({name}) has shape "
                             f"{tuple(weight.shape)}, expected (*, {channels}, 3, 3)")
        layers.append(nn.Conv2d(channels, weight.shape[0], 3, padding=1))
        channels = weight.shape[0]
        if name == last:
            break
        layers.append(nn.ReLU())
    else:
        raise ValueError(f"unknown VGG19 layer {last!r}")
    features = nn.Sequential(*layers)
    prefix = "features."
    features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)
                              and int(k.split(".")[1]) < len(layers)})
    return features.requires_grad_(False).eval()


def load_vgg19(path: Path, last: str = "conv5_4") -> nn.Sequential:
    """VGG19 features up to `last` from torchvision's weight file at `path` (loaded with
    weights_only=True). Raises MissingVGGWeights (pipeline.train.loss_settings) naming the file
    and where to get it."""
    path = require_vgg19_file(path)
    return vgg19_features(load_checkpoint(path, "cpu"), last, source=str(path))


class PerceptualLoss(nn.Module):
    """sum over layers l of w_l * mean |phi_l(pred) - phi_l(target)|, phi_l = the VGG19 conv
    output l before its ReLU, on ImageNet-normalised inputs (the BasicSR / Real-ESRGAN loss).

    `features` is `vgg19_features(...)`; `layer_weights` maps conv names (conv1_2, ...) to
    weights. Inputs: float [0,1] NCHW. The VGG weights are frozen.
    """

    def __init__(self, features: nn.Sequential, layer_weights: Mapping[str, float] | None = None):
        super().__init__()
        layer_weights = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        index = dict(vgg19_layer_names())
        unknown = sorted(set(layer_weights) - {n for n in index if n.startswith("conv")})
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown} (names are conv1_1 ... conv5_4)")
        self.taps = {index[name]: float(w) for name, w in layer_weights.items()}
        depth = max(self.taps) + 1
        if depth > len(features):
            raise ValueError(f"the VGG19 features stop at layer {len(features) - 1}; "
                             f"the loss needs layer {depth - 1}")
        self.features = features[:depth].requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # frozen: never leaves eval mode

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wanted = self._taps(target)
        got = self._taps(pred)
        weights = [self.taps[i] for i in sorted(self.taps)]
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(weights, got, wanted, strict=True))


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Vanilla GAN loss: binary cross-entropy of discriminator logits against all-real (1) or
    all-fake (0) targets, averaged over every logit (per-pixel for the U-Net discriminator)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
