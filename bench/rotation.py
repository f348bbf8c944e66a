"""Run benchmark cases in a rotating order and summarise the repeats as median and spread.

Cases run once per repeat, in the order of one row of a balanced Latin square (Williams
design): over a full cycle of rows (n rows for n cases, 2n when n is odd) every case runs in
every position equally often and right after every other case equally often, so no case
always follows the same neighbour (cache state, CPU frequency, allocator state). Each figure
is then the median over repeats with the min-max spread; a ratio is the median of the
per-repeat ratios (both cases measured in the same repeat, minutes apart at most).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def balanced_orders(n: int) -> list[list[int]]:
    """Rows of a balanced Latin square over cases 0..n-1: n rows (n even) or 2n (n odd),
    each a permutation; every ordered pair (a right before b) occurs once per cycle (twice
    for odd n)."""
    if n < 1:
        raise ValueError(f"need at least one case, got {n}")
    first, lo, hi = [0], 1, n - 1
    while lo <= hi:
        first.append(lo)
        lo += 1
        if lo <= hi:
            first.append(hi)
            hi -= 1
    rows = [[(c + r) % n for c in first] for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def orders(n: int, repeats: int) -> list[list[int]]:
    """The case order of each of `repeats` repeats: the balanced rows in turn, cycled."""
    rows = balanced_orders(n)
    return [rows[r % len(rows)] for r in range(repeats)]


def cycle_length(n: int) -> int:
    """Repeats in one full cycle of orders for n cases (n, or 2n when n is odd)."""
    return len(balanced_orders(n))


def rotate(cases: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Call every case once per repeat in the rotating order; returns, per case name, what
    its calls returned, in repeat order (so index r of two cases comes from the same repeat)."""
    names = list(cases)
    out: dict[str, list[T]] = {name: [] for name in names}
    for order in orders(len(names), repeats):
        for i in order:
            out[names[i]].append(cases[names[i]]())
    return out


@dataclass(frozen=True)
class Timing:
    """One call's wall-clock and process CPU time, seconds."""

    wall: float
    cpu: float


def timed(fn: Callable[[], object]) -> Callable[[], Timing]:
    """`fn` wrapped to return its wall and process-CPU seconds (its own result is dropped)."""

    def run() -> Timing:
        t, c = time.perf_counter(), time.process_time()
        fn()
        return Timing(time.perf_counter() - t, time.process_time() - c)

    return run


@dataclass(frozen=True)
class Spread:
    """Median and min-max of repeated measurements, in the measurements' unit."""

    median: float
    low: float
    high: float

    def scaled(self, factor: float) -> Spread:
        """The same spread in another unit (every value times `factor`; factor > 0)."""
        return Spread(self.median * factor, self.low * factor, self.high * factor)

    def inverse(self, numerator: float = 1.0) -> Spread:
        """numerator / value (e.g. seconds -> items/s): the low and high ends swap."""
        return Spread(numerator / self.median, numerator / self.high, numerator / self.low)

    def fmt(self, spec: str = ".2f", suffix: str = "") -> str:
        """'median (low-high)' with the format `spec`, e.g. '2.01x (1.95-2.10x)'."""
        m, lo, hi = (format(v, spec) for v in (self.median, self.low, self.high))
        return f"{m}{suffix} ({lo}-{hi}{suffix})"


def spread(values: Sequence[float]) -> Spread:
    """Median, minimum and maximum of `values` (non-empty)."""
    return Spread(float(statistics.median(values)), float(min(values)), float(max(values)))


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Spread:
    """Spread of the per-repeat ratios numerator[r] / denominator[r] (paired by repeat)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"{len(numerator)} against {len(denominator)} measurements")
    return spread([a / b for a, b in zip(numerator, denominator, strict=True)])
