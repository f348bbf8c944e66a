"""Shard writing: ShardWriter against plain h5py and numpy.tofile on the same arrays.

    .venv/bin/python -m bench.bench_write [--samples 256] [--repeats 7]

The same random arrays (192-pixel patches, 3 candidates, x4 LR, 2 metrics) are written as 4
files of 64 samples by:
- tofile: each array's bytes with numpy.tofile (the hardware floor of the page cache / disk);
- h5py: plain h5py, default settings (contiguous datasets, `create_dataset(data=...)` per
  array per file), the way a user writes HDF5 by hand; no hashing;
- ShardWriter: gtforge's writer (chunked one image per chunk, per-sample `add`, tables at
  the end of each shard, sha256 of every shard and the manifest).
Each case runs with and without fsync (tofile and h5py: os.fsync of each file after it is
written; ShardWriter always syncs, so its "no fsync" row has durable.fsync_* stubbed out).
The six cells run once per repeat in a rotating order (bench.rotation: balanced Latin square,
6 repeats = one cycle); the table gives the median MB/s with the min-max spread, and each rate
as a fraction of tofile's and of h5py's in the same fsync setting (median (min-max) of the
per-repeat ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import h5py
import numpy as np

from bench.rotation import ratio, rotate, spread
from pipeline.shards.writer import ShardWriter
from pipeline.store import durable

PATCH, SCALE, K, M, PER_FILE = 192, 4, 3, 2, 64


def make_arrays(count: int) -> dict[str, np.ndarray]:
    rand = np.random.default_rng(1)
    lr = PATCH // SCALE
    return {"gt_original": rand.integers(0, 256, (count, PATCH, PATCH, 3), np.uint8),
            "gt_candidates": rand.integers(0, 256, (count, K, PATCH, PATCH, 3), np.uint8),
            "labels": rand.integers(-1, 2, (count, K)).astype(np.int8),
            "vote_counts": rand.integers(0, 4, (count, K, 3)).astype(np.uint8),
            "scores": rand.random((count, K + 1, M), np.float32),
            "lq": rand.integers(0, 256, (count, lr, lr, 3), np.uint8),
            "lq_vqvae": rand.integers(0, 256, (count, lr, lr, 3), np.uint8)}


def _parts(data: dict[str, np.ndarray]):
    count = len(data["gt_original"])
    for f, start in enumerate(range(0, count, PER_FILE)):
        yield f, {k: v[start:start + PER_FILE] for k, v in data.items()}


def write_tofile(folder: Path, data: dict, sync: bool) -> None:
    for f, part in _parts(data):
        with open(folder / f"raw-{f}.bin", "wb") as out:
            for array in part.values():
                array.tofile(out)
            if sync:
                out.flush()
                os.fsync(out.fileno())


def write_h5py(folder: Path, data: dict, sync: bool) -> None:
    for f, part in _parts(data):
        path = folder / f"plain-{f}.h5"
        with h5py.File(path, "w") as out:
            for name, array in part.items():
                out.create_dataset(name, data=array)
        if sync:
            durable.fsync_file(path)


def write_shards(folder: Path, data: dict, sync: bool) -> None:
    stubs = contextlib.ExitStack()
    if not sync:
        for name in ("fsync_file", "fsync_dir"):
            stubs.enter_context(mock.patch.object(durable, name, lambda path: None))
        stubs.enter_context(mock.patch.object(os, "fsync", lambda fd: None))
    with stubs, ShardWriter(folder / "shards", samples_per_shard=PER_FILE, patch_size=PATCH,
                            scale=SCALE, candidate_names=["a", "b", "c"], metric_names=["m", "n"],
                            compression=None, params={}, sources=["s"]) as w:
        for i in range(len(data["gt_original"])):
            w.add(data["gt_original"][i], data["gt_candidates"][i], data["labels"][i],
                  data["scores"][i], data["lq"][i], data["lq_vqvae"][i], "id", 0, 0, 0,
                  vote_counts=data["vote_counts"][i])


CASES = {"tofile": write_tofile, "h5py": write_h5py, "ShardWriter": write_shards}


def run(samples: int, repeats: int, root: Path) -> dict[tuple[str, bool], list[float]]:
    """MB/s of every (writer, fsync) cell, one value per repeat (in repeat order), the six
    cells in a rotating order (bench.rotation) after one untimed call each, every call writing
    into a fresh folder under `root`."""
    data = make_arrays(samples)
    nbytes = sum(v.nbytes for v in data.values())

    def cell(name: str, sync: bool):
        def write() -> float:
            folder = Path(tempfile.mkdtemp(dir=root))
            start = time.perf_counter()
            CASES[name](folder, data, sync)
            rate = nbytes / (time.perf_counter() - start) / 1e6
            shutil.rmtree(folder)
            return rate
        return write

    cells = {(name, sync): cell(name, sync) for sync in (False, True) for name in CASES}
    for write in cells.values():
        write()  # warm-up: imports, first file creation, page-cache state
    return rotate(cells, repeats)


def print_table(rates: dict[tuple[str, bool], list[float]]) -> None:
    """Print median MB/s (min-max) per cell and the median (min-max) of the per-repeat ratios
    to tofile and to h5py in the same fsync setting."""
    print("| writer | fsync | MB/s | ÷ tofile (same fsync) | ÷ h5py (same fsync) |")
    print("|---|---|---|---|---|")
    for (name, sync), values in rates.items():
        print(f"| {name} | {'yes' if sync else 'no'} | {spread(values).fmt('.0f')} | "
              f"{ratio(values, rates[('tofile', sync)]).fmt('.2f')} | "
              f"{ratio(values, rates[('h5py', sync)]).fmt('.2f')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--repeats", type=int, default=12, help="repeats (a multiple of 6 = "
                   "whole cycles of the rotation)")
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rates = run(args.samples, args.repeats, Path(tmp))
    print(f"\n{args.samples} samples of {PATCH} px, {K} candidates, {args.samples // PER_FILE} "
          f"files; median (min-max) of {args.repeats} repeats, cells in rotating order\n")
    print_table(rates)


if __name__ == "__main__":
    main()
