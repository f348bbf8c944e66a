"""Annotators' scores: pyiqa metrics and the learned judge's heads score every candidate of
a patch against its original (docs/ANNOTATION.md); pipeline.quality.voting turns the scores
into votes and labels. Shapes: N patches, K candidates, M metrics; patches are uint8 RGB HWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.quality import iqa
from pipeline.quality.judge import HEADS
from pipeline.quality.voting import DIFFERENCE_MEASURES, JUDGE, LEARNED, NEIGHBOURS


def annotator_names(metrics: Sequence[str]) -> list[str]:
    """The annotators of a `metrics` setting: a pyiqa name is one, "judge" and "neighbours"
    are three heads each (judge_psnr, judge_ssim, judge_edges; neighbours_psnr, ...)."""
    return [n for m in metrics for n in ([f"{m}_{h}" for h in HEADS] if m in LEARNED else [m])]


def annotator_info(name: str) -> iqa.MetricInfo:
    """Mode and direction of an annotator: a head of the judge or of the neighbours annotator
    is pairwise (it compares the candidate with the original, higher is better: in dB, and
    in net shares of neighbours); others are pyiqa metrics."""
    if name.startswith(f"{JUDGE}_"):
        return iqa.MetricInfo(name, "pairwise", lower_better=False,
                              score_range="dB closer than the original")
    if name.startswith(f"{NEIGHBOURS}_"):
        return iqa.MetricInfo(name, "pairwise", lower_better=False,
                              score_range="net share of the nearest pool pairs that came out "
                                          "closer (-1 to 1)")
    return iqa.metric_info(name)


def pairwise_scores(gains: np.ndarray) -> np.ndarray:
    """A pairwise annotator's gains (N,K,M) as scores (N,K+1,M): row 0, the original against
    itself, 0."""
    return np.concatenate([np.zeros_like(gains[:, :1]), gains], axis=1).astype(np.float32)


def score_patches(original: np.ndarray, candidates: np.ndarray, metrics: Sequence[str],
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Score each patch's original and candidates with every metric.

    original: uint8 (N,H,W,3); candidates: uint8 (N,K,H,W,3), K may be 0.
    Returns float32 (N,K+1,M): index 0 along the second axis is the original. NR metrics score
    each version alone; FR metrics score each version against the original (so index 0 holds
    the metric's value for the original compared with itself, its best value).
    """
    original, candidates = np.asarray(original), np.asarray(candidates)
    n, k = len(original), candidates.shape[1] if candidates.ndim == 5 else 0
    if candidates.shape[:1] != (n,) or candidates.shape[2:] not in ((), original.shape[1:]):
        raise ValueError(f"candidates {candidates.shape} do not match originals {original.shape}")
    versions = np.concatenate([original[:, None], candidates.reshape(n, k, *original.shape[1:])],
                              axis=1).reshape(n * (k + 1), *original.shape[1:])
    reference = np.repeat(original, k + 1, axis=0)
    out = np.empty((n, k + 1, len(metrics)), np.float32)
    for m, name in enumerate(metrics):
        ref = reference if iqa.metric_info(name).full_reference else None
        values = iqa.score_images(name, versions, reference=ref, device=device)
        out[:, :, m] = values.reshape(n, k + 1)
    return out


def difference(original: np.ndarray, candidates: np.ndarray, measure: str = "mad",
               device: torch.device | str = "cpu") -> np.ndarray:
    """How much each candidate differs from its original: float32 (N,K).

    measure: "mean_diff" = |mean(original - candidate)| on 0-255 (HGGT's reference code; blind to
    changes that average out, e.g. sharpening or noise), "mad" = mean |original - candidate| on
    0-255, "ssim" = 1 - SSIM (pyiqa, on luma; 0 identical, up to ~1).
    """
    if measure not in DIFFERENCE_MEASURES:
        raise ValueError(f"difference measure must be one of {DIFFERENCE_MEASURES}, "
                         f"got {measure!r}")
    original, candidates = np.asarray(original), np.asarray(candidates)
    n, k = len(original), candidates.shape[1] if candidates.ndim == 5 else 0
    if k == 0:
        return np.zeros((n, 0), np.float32)
    if measure == "ssim":
        flat = candidates.reshape(n * k, *original.shape[1:])
        ssim = iqa.score_images("ssim", flat, reference=np.repeat(original, k, axis=0),
                                device=device)
        return (1.0 - ssim).reshape(n, k).astype(np.float32)
    out = np.empty((n, k), np.float32)
    base = original.astype(np.float32)
    for j in range(k):  # one candidate at a time: float copies of a chunk, not of all K
        diff = base - candidates[:, j].astype(np.float32)
        out[:, j] = (np.abs(diff.mean(axis=(1, 2, 3))) if measure == "mean_diff"
                     else np.abs(diff).mean(axis=(1, 2, 3)))
    return out


