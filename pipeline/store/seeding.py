"""Seeds derived from a stage key and an item: the only source of randomness in gtforge."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, e.g. (stage_key, image_id, variant)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def rng(*parts: object) -> np.random.Generator:
    """A numpy generator seeded by `derive_seed(*parts)`."""
    return np.random.default_rng(derive_seed(*parts))
