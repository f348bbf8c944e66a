"""bench/rotation.py: the rotating case order and the median/spread summaries."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.rotation import balanced_orders, orders, ratio, rotate, spread


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 20])
def test_balanced_orders_put_every_case_everywhere_and_after_every_other(n):
    rows = balanced_orders(n)
    assert len(rows) == (2 * n if n % 2 else n)
    assert all(sorted(row) == list(range(n)) for row in rows)
    for position in range(n):  # each case in each position equally often
        assert Counter(row[position] for row in rows) == {c: len(rows) // n for c in range(n)}
    pairs = Counter((a, b) for row in rows for a, b in zip(row, row[1:], strict=False))
    if n > 1:  # each case right after each other case equally often
        assert len(pairs) == n * (n - 1) and len(set(pairs.values())) == 1


def test_rotate_calls_each_case_once_per_repeat_in_the_rotating_order():
    calls = []
    cases = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "abcd"}
    out = rotate(cases, 6)
    assert [len(v) for v in out.values()] == [6] * 4
    assert calls == ["abcd"[i] for order in orders(4, 6) for i in order]
    assert calls[:4] != calls[4:8]  # the order changes between repeats


def test_spread_and_paired_ratio():
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high) == (2.5, 1.0, 10.0)
    assert s.inverse(10.0).low == pytest.approx(1.0) and s.scaled(2).median == 5.0
    assert s.fmt(".1f", "x") == "2.5x (1.0-10.0x)"
    r = ratio([2.0, 6.0, 3.0], [1.0, 2.0, 3.0])  # per repeat: 2, 3, 1
    assert (r.median, r.low, r.high) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError):
        ratio([1.0], [1.0, 2.0])
