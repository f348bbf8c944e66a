"""Loader throughput: DataLoader samples/s of 128x128 GT crops (x4 LR pairs), batch 16,
num_workers 0 and 2, from the same patches stored four ways, all built here:

- shards:   gtforge shards (ShardDataset, plain shuffle and ShardBatchSampler)
- png:      a BasicSR-style paired PNG folder (gt/, lq/; export_folder), cv2.imread per image
- lmdb:     BasicSR-style LMDBs of PNG bytes (gt.lmdb, lq.lmdb; export_lmdb), imdecode per image
- floor:    the same patches held in RAM as one numpy array

Every variant runs the same pipeline after reading a sample: paired random crop, flips and
rotations, CHW tensors, default collate. Two tensor types: float32 in [0,1] made in the
workers, and uint8 from the workers made float32 in the main process (`to_float`, on the CPU
here; a trainer does it on its GPU), both timed up to float32 batches in the main process.
The 20 read cells (2 dtypes x 2 worker counts x 5 variants) run once per repeat in a rotating
order (bench.rotation: rows of a balanced Latin square); each figure is the median (min-max)
over repeats, each ratio the median (min-max) of per-repeat ratios. All stores are read from
the page cache (written just before, no fsync and no cache drop for any of them).

Also shard writing: bench.bench_write's three writers (numpy.tofile, plain h5py, ShardWriter)
on 256 samples, each with fsync (tofile and h5py fsync every file; ShardWriter its shards,
folder and manifest, as always) and without (ShardWriter's fsync calls stubbed out), the six
cells in a rotating order, so both sides of every ratio sync alike.

    .venv/bin/python -m bench.bench_loader            # about 3-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.bench_write import print_table
from bench.bench_write import run as write_rates
from bench.rotation import ratio, rotate, spread
from examples.photo_shards import candidates, patches, read_photos, scores
from pipeline.shards.dataset import (
    DTYPES,
    ShardBatchSampler,
    ShardDataset,
    augment,
    crop_box,
    to_float,
    to_tensor,
)
from pipeline.shards.export import export_folder, export_lmdb
from pipeline.shards.writer import ShardWriter

PATCH, SCALE, CROP, BATCH = 192, 4, 128, 16


class PairedSource(Dataset):
    """(gt, lq) uint8 RGB HWC from one backend, then ShardDataset's crop/augment/tensor steps."""

    def __init__(self, kind: str, dtype: str, root: Path | None = None, arrays=None,
                 names=None):
        self.kind, self.dtype, self.root, self.arrays, self.names = kind, dtype, root, arrays, names
        self.env = None

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "floor":
            return self.arrays[0][i], self.arrays[1][i]
        if self.kind == "png":
            return tuple(cv2.cvtColor(cv2.imread(str(self.root / k / f"{self.names[i]}.png")),
                                      cv2.COLOR_BGR2RGB) for k in ("gt", "lq"))
        if self.env is None:                  # opened in the worker that reads
            import lmdb

            self.env = {k: lmdb.open(str(self.root / f"{k}.lmdb"), readonly=True, lock=False,
                                     readahead=False) for k in ("gt", "lq")}
        out = []
        for k in ("gt", "lq"):
            with self.env[k].begin(write=False) as txn:
                buf = np.frombuffer(txn.get(self.names[i].encode()), np.uint8)
            out.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        return out[0], out[1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rand = np.random.default_rng(int(torch.randint(0, 2**62, (), dtype=torch.int64)))
        gt, lq = self.read(i)
        lr = CROP // SCALE
        x, y = crop_box(rand, lq.shape[0], lr)
        flips = tuple(bool(v) for v in rand.integers(2, size=3))
        return {"gt": to_tensor(augment(gt[y * SCALE:(y + lr) * SCALE,
                                           x * SCALE:(x + lr) * SCALE], flips), self.dtype),
                "lq": to_tensor(augment(lq[y:y + lr, x:x + lr], flips), self.dtype)}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "env": None}


def build(folder: Path, max_patches: int) -> tuple[dict, int]:
    """Patches of the sample photos written as shards, PNG folder and LMDB; the RAM arrays."""
    import skimage.data

    photos, sources = read_photos(Path(skimage.data.__file__).parent)
    rand = np.random.default_rng(0)
    rows = [(s, x, y, crop) for s, photo in enumerate(photos)
            for x, y, crop in patches(photo, PATCH, 64)][:max_patches]
    lr = PATCH // SCALE
    gts = np.stack([r[3] for r in rows])
    lqs = np.stack([cv2.resize(g, (lr, lr), interpolation=cv2.INTER_AREA) for g in gts])
    with ShardWriter(folder / "shards", samples_per_shard=64, patch_size=PATCH, scale=SCALE,
                     candidate_names=["unsharp", "smooth", "noisy"],
                     metric_names=["sharpness", "brightness"], compression=None, params={},
                     sources=sources) as w:
        for (s, x, y, _), gt, lq in zip(rows, gts, lqs, strict=True):
            cands, labels = candidates(gt, rand)
            w.add(gt, cands, labels, scores(np.concatenate([gt[None], cands])), lq, lq,
                  f"p{s:03d}", x, y, s)
    export_folder(folder / "shards", folder / "png", kinds=["gt", "lq"])
    export_lmdb(folder / "shards", folder / "lmdb", kinds=["gt", "lq"])
    names = sorted(p.stem for p in (folder / "png" / "gt").glob("*.png"))
    return {"gts": gts, "lqs": lqs, "names": names}, len(rows)


def samples_per_second(dataset, workers: int, batches: int, sampler=None,
                       warmup: int = 20) -> float:
    """Steady-state samples/s: `warmup` batches first (workers started, files opened and
    touched, as in a long training run), then `batches` timed ones, each made float32 in
    the main process (`to_float`, a no-op for float32 batches)."""
    kwargs = ({"batch_sampler": sampler} if sampler is not None else
              {"batch_size": BATCH, "shuffle": True, "drop_last": True})
    loader = DataLoader(dataset, num_workers=workers, persistent_workers=workers > 0, **kwargs)
    done, it = 0, iter(loader)
    for _ in range(warmup):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
    start = time.perf_counter()
    while done < batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        batch = to_float(batch)
        assert batch["gt"].shape[1:] == (3, CROP, CROP) and batch["gt"].dtype == torch.float32
        done += 1
    elapsed = time.perf_counter() - start
    del it, loader
    return done * BATCH / elapsed


def variants(folder: Path, arrays: dict) -> dict:
    """name -> (workers, dtype) -> (dataset, batch sampler or None), the five read paths."""

    def shards(dtype: str) -> ShardDataset:
        return ShardDataset(folder / "shards", crop=CROP, target="original", dtype=dtype)

    def paired(kind: str, dtype: str) -> PairedSource:
        if kind == "floor":
            return PairedSource("floor", dtype, arrays=(arrays["gts"], arrays["lqs"]),
                                names=arrays["names"])
        return PairedSource(kind, dtype, folder / kind, names=arrays["names"])

    return {
        "shards": lambda w, dt: (shards(dt), None),
        "shards + ShardBatchSampler": lambda w, dt: (
            ds := shards(dt), ShardBatchSampler(ds, BATCH, w, drop_last=True)),
        "png folder": lambda w, dt: (paired("png", dt), None),
        "lmdb (png bytes)": lambda w, dt: (paired("lmdb", dt), None),
        "floor (RAM array)": lambda w, dt: (paired("floor", dt), None),
    }


def read_rates(folder: Path, arrays: dict, batches: int,
               reps: int) -> dict[tuple[str, str, int], list[float]]:
    """samples/s of every (dtype, variant, workers) cell, one value per repeat (repeat order),
    the 20 cells in a rotating order (bench.rotation)."""
    paths = variants(folder, arrays)

    def cell(dtype: str, name: str, workers: int):
        def measure() -> float:
            ds, sampler = paths[name](workers, dtype)
            return samples_per_second(ds, workers, batches, sampler)
        return measure

    return rotate({(dtype, name, workers): cell(dtype, name, workers) for dtype in DTYPES
                   for workers in (0, 2) for name in paths}, reps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patches", type=int, default=320)
    p.add_argument("--batches", type=int, default=100, help="timed batches per measurement")
    p.add_argument("--reps", type=int, default=5, help="repeats of the read cells and of the "
                   "write cells")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_loader_", dir=os.environ.get("TMPDIR")) as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        arrays, n = build(folder, args.patches)
        print(f"{n} patches of {PATCH}x{PATCH} (x{SCALE} LR) built in "
              f"{time.perf_counter() - start:.0f} s; crops {CROP}x{CROP}, batch {BATCH}; "
              f"median (min-max) of {args.reps} repeats, cells in rotating order")
        rates = read_rates(folder, arrays, args.batches, args.reps)
        print("\n| tensors from workers | variant | workers | samples/s | shards ÷ variant |")
        print("|---|---|---|---|---|")
        for (dtype, name, workers), values in rates.items():
            print(f"| {dtype} | {name} | {workers} | {spread(values).fmt('.0f')} | "
                  f"{ratio(rates[(dtype, 'shards', workers)], values).fmt('.2f')} |")
        print("\nshard writing (bench.bench_write's cases, 256 samples; fsync on both sides in "
              "the 'yes' rows, on neither in the 'no' rows):\n")
        print_table(write_rates(256, args.reps, folder))

if __name__ == "__main__":
    main()
