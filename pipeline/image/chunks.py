"""Content-defined chunks and samples of a photo corpus: a partition by content id that stays
put when photos are added or removed, and a seeded sample that does not depend on the others."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def is_boundary(image_id: str, chunk_photos: int) -> bool:
    """Whether a chunk ends after this photo: true for about one id in `chunk_photos`, decided by
    the id's last 8 hex digits (the sort uses the first ones, so the two are independent)."""
    return int(image_id[-8:], 16) % chunk_photos == 0


def partition(image_ids: Iterable[str], chunk_photos: int) -> list[tuple[str, ...]]:
    """The ids sorted and cut after every boundary id (is_boundary): chunks of `chunk_photos`
    photos on average (a geometric spread). Adding a photo changes only the chunk it falls in
    (or splits it in two when it is a boundary); removing one changes only its chunk (or merges
    it with the next). Raises ValueError when chunk_photos < 1."""
    if chunk_photos < 1:
        raise ValueError(f"chunk_photos must be >= 1, got {chunk_photos}")
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    for image_id in sorted(set(image_ids)):
        current.append(image_id)
        if is_boundary(image_id, chunk_photos):
            chunks.append(tuple(current))
            current = []
    if current:
        chunks.append(tuple(current))
    return chunks


def sample(image_ids: Iterable[str], count: int, seed: int) -> list[str]:
    """`count` of the ids (all when count <= 0 or there are fewer), sorted: those whose
    sha256 of "<seed>:<id>" is smallest. A photo's rank depends only on itself and the seed,
    so the same photos give the same sample in any order and on any machine, and adding a
    photo can only displace the one it outranks."""
    ids = sorted(set(image_ids))
    if count <= 0 or count >= len(ids):
        return ids
    rank = lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest()  # noqa: E731
    return sorted(sorted(ids, key=rank)[:count])
