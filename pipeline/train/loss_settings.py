"""The enhancers' loss settings, without torch (a stage's key and fingerprint need them): the
weights of the loss terms and the VGG19 weight file behind the perceptual term."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (DESIGN: L1 1.0, perceptual 1.0, GAN 0.1)."""

    l1: float = 1.0
    perceptual: float = 1.0
    gan: float = 0.1


class MissingVGGWeights(FileNotFoundError):
    """A VGG19 weight file was configured but is not on disk."""


def require_vgg19_file(path: Path) -> Path:
    """`path` as a Path if it is a file; else raises MissingVGGWeights naming the file and
    where to get it."""
    path = Path(path)
    if not path.is_file():
        raise MissingVGGWeights(
            f"VGG19 weights {path} not found. gtforge does not download weights: fetch "
            f"torchvision's {VGG19_FILE} ({VGG19_URL}) on a machine with internet and put it at "
            f"{path.resolve()}, or point [paper.TrainEnhancer] vgg19_weights in luigi.cfg at "
            f"your copy, or leave vgg19_weights empty to train without a perceptual loss")
    return path
