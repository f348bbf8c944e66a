"""Handing a long-lived worker's freed heap memory back to the system between tasks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Give the free pages of glibc's heaps back to the system (malloc_trim(0)). Returns True
    when it did, False where the C library has no malloc_trim.

    Why: glibc raises its mmap threshold each time a large block is freed, so later photo-size
    arrays come from the heap, and pages freed between live blocks stay resident. A worker
    that runs hundreds of chunk tasks in one process then keeps growing (measured:
    docs/PERFORMANCE.md, "Chunked builds")."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
