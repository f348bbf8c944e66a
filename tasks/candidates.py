"""Candidate GT sources by name: the stages whose images compete with the original."""

from __future__ import annotations

from tasks.base import Stage
from tasks.config import ENHANCER_CANDIDATES, FUSED, gtforge
from tasks.enhance import EnhanceHR
from tasks.fuse import FuseGT


def candidate_stage(name: str, chunk: tuple[str, ...] = ()) -> Stage:
    """The stage producing candidate `name` for a chunk's photos: same-size images at
    images/<image_id>.png."""
    if name in ENHANCER_CANDIDATES:
        backbone, degradation = name.split("_")
        return EnhanceHR(backbone=backbone, degradation=degradation, chunk=chunk)
    if name == FUSED:
        return FuseGT(chunk=chunk)
    known = ", ".join((*ENHANCER_CANDIDATES, FUSED))
    raise ValueError(f"unknown candidate {name!r} in [gtforge] candidates (known: {known})")


def candidate_stages(chunk: tuple[str, ...] = ()) -> dict[str, Stage]:
    """The configured candidates of a chunk's photos, in [gtforge] candidates order."""
    return {name: candidate_stage(name, chunk) for name in gtforge().candidate_names()}
