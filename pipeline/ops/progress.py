"""Progress for long loops: a tqdm bar on a terminal and a callback for luigid."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
ProgressCallback = Callable[[float, str], None]


def track(items: Iterable[T], total: int, desc: str, on_progress: ProgressCallback | None = None,
          every_s: float = 2.0) -> Iterator[T]:
    """Yield `items`, drawing a bar on a terminal (none otherwise) and calling
    `on_progress(percent, message)` at most every `every_s` seconds and once at the end."""
    from tqdm import tqdm  # a fully cached build draws no bar: its import (0.1 s) waits

    last = 0.0
    bar = tqdm(items, total=total, desc=desc, disable=None, leave=False)
    for done, item in enumerate(bar, start=1):
        yield item
        now = time.monotonic()
        if on_progress and (now - last >= every_s or done == total):
            on_progress(100.0 * done / max(total, 1), f"{desc}: {done}/{total}")
            last = now
