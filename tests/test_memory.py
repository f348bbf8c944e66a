"""Freed heap memory goes back to the system after every task."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pipeline.ops import memory
from tasks.ingest import IngestHR
from tests.conftest import run_tasks

pytestmark = pytest.mark.skipif(memory._malloc_trim() is None, reason="no glibc malloc_trim")


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_release_gives_back_pages_freed_between_live_blocks():
    # 100 kB blocks come from the heap (below glibc's mmap threshold); the last one stays
    # allocated, so free() alone cannot shrink the heap under it
    blocks = [np.ones(12_800) for _ in range(2_000)]  # 200 MB
    last = blocks[-1]
    del blocks
    before = resident_mb()
    assert memory.release_free_memory()
    assert before - resident_mb() > 100, "malloc_trim gave back less than half of 200 MB"
    assert last.sum() == 12_800


def test_every_stage_releases_after_its_build(build_env, monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules["tasks.base"], "release_free_memory",
                        lambda: calls.append(True))
    run_tasks(IngestHR())
    assert calls == [True]
