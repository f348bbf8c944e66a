"""Training input: random crops from memory-mapped copies of the training images, drawn in
DataLoader worker processes, one batch per step.

Why memory-mapped arrays: a crop of an uncompressed uint8 array (`numpy.load(mmap_mode="r")`)
reads only the rows it covers, about 30 us for 96^2 against ~47 ms to decode a whole 2040x1356
PNG. The price is disk: 3 bytes per pixel (2-3x the PNG), for as long as the training runs
(`ArrayStore` lives in the stage's partial folder and goes when the training is published).

Determinism: sample j of step i draws everything (image, position, flip, degradation) from
`rng(seed, i, j)` alone, so the batch of a step does not depend on the worker that made it,
on how many workers there are, or on where a run was resumed.
"""

from __future__ import annotations

import io
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.image.conversions import to_tensor
from pipeline.store import durable
from pipeline.store.seeding import rng

# A sampler turns one sample's generator and its aligned images into uint8 HWC crops.
Sampler = Callable[[np.random.Generator, Sequence[np.ndarray]], Sequence[np.ndarray]]


class ArrayStore:
    """A folder of uint8 HWC images as .npy files, opened memory-mapped (once per process)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._open: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:  # a worker process opens its own maps
        return {"folder": self.folder, "_open": {}}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def put(self, name: str, load: Callable[[], np.ndarray]) -> tuple[int, ...]:
        """Write image `name` from `load()` unless a complete copy is there (a resumed run
        keeps it; the write is atomic); returns its shape (H, W, 3)."""
        path = self.path(name)
        if path.exists():
            return self.get(name).shape
        image = np.ascontiguousarray(load())
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"{name}: expected uint8 HxWxC, got {image.dtype} {image.shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, image)
        durable.write_bytes(path, buffer.getbuffer())  # synced: a resume trusts the name
        return image.shape

    def get(self, name: str) -> np.ndarray:
        """Image `name`, read-only and memory-mapped: slicing it reads only what it covers."""
        if name not in self._open:
            self._open[name] = np.load(self.path(name), mmap_mode="r")
        return self._open[name]


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an HWC image (k in 0..7)."""
    image = np.rot90(image, k % 4)
    return image[:, ::-1] if k >= 4 else image


class AlignedCrops:
    """A sampler of aligned crops: `crop` pixels of the smallest image at a random place, the
    same region of each other image (an integer multiple of it in size, e.g. an LR and its HR),
    then one random flip: of 8 flips/rotations (`flips=8`) or of the 4 horizontal/vertical ones
    (`flips=4`)."""

    def __init__(self, crop: int, flips: int = 8):
        if flips not in (4, 8):
            raise ValueError(f"flips = {flips}: 4 (h/v) or 8 (with rotations)")
        self.crop, self.flips = crop, flips

    def __call__(self, draw: np.random.Generator,
                 images: Sequence[np.ndarray]) -> list[np.ndarray]:
        small = min(images, key=lambda im: im.shape[0])
        h, w = small.shape[:2]
        if min(h, w) < self.crop:
            raise ValueError(f"image {w}x{h} is smaller than the training crop {self.crop}")
        y, x = int(draw.integers(h - self.crop + 1)), int(draw.integers(w - self.crop + 1))
        k = int(draw.integers(8)) if self.flips == 8 else 4 * int(draw.integers(2)) + \
            2 * int(draw.integers(2))
        crops = []
        for image in images:
            f = image.shape[0] // h
            patch = np.asarray(image[y * f:(y + self.crop) * f, x * f:(x + self.crop) * f])
            crops.append(np.ascontiguousarray(dihedral(patch, k)))
        return crops


class CropBatches(Dataset):
    """Batch i (a Dataset item per step): `batch` samples, sample j made by `sampler` from
    `rng(seed, i, j)` and one group of aligned images drawn from `groups` (names in `store`).
    Returns a tuple of float32 [0,1] tensors (B,C,h,w), one per crop the sampler makes, or
    with `stack` one (B,S,C,h,w) tensor of them all."""

    def __init__(self, store: ArrayStore, groups: Sequence[Sequence[str]], sampler: Sampler,
                 batch: int, seed: int, stack: bool = False):
        if not groups:
            raise ValueError("no training images")
        self.store, self.groups, self.sampler = store, [list(g) for g in groups], sampler
        self.batch, self.seed, self.stack = batch, seed, stack

    def __len__(self) -> int:
        return 2**62  # indexed by step; the feed decides which steps

    def sample(self, step: int, j: int) -> Sequence[np.ndarray]:
        draw = rng(self.seed, step, j)
        group = self.groups[int(draw.integers(len(self.groups)))]
        return self.sampler(draw, [self.store.get(name) for name in group])

    def __getitem__(self, step: int) -> tuple[torch.Tensor, ...] | torch.Tensor:
        samples = [self.sample(step, j) for j in range(self.batch)]
        parts = [to_tensor(np.stack(crops)) for crops in zip(*samples, strict=True)]
        return torch.stack(parts, 1) if self.stack else tuple(parts)


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fresh server process that has imported this module (and so
    torch and OpenCV) but run nothing: a fork of the training process itself inherits its
    OpenCV / OpenMP thread pools without their threads and can hang in its first parallel
    call, and spawning imports torch anew for every worker (seconds each)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _quiet_worker(_: int) -> None:
    """Each worker is one core: one torch and one OpenCV thread."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class Feed:
    """`feed(i)`: batch i of `batches`, made ahead by `workers` processes (0: in this one).
    Steps are asked for in order; a jump (a resumed run) starts a new loader at that step."""

    def __init__(self, batches: Dataset, total: int, workers: int, prefetch: int = 4):
        self.batches, self.total, self.workers, self.prefetch = batches, total, workers, prefetch
        self._next, self._iter = None, None

    def _loader(self, start: int) -> Iterator:
        if self.workers == 0:
            return (self.batches[i] for i in range(start, self.total))
        return iter(DataLoader(self.batches, batch_size=None, sampler=range(start, self.total),
                               num_workers=self.workers, prefetch_factor=self.prefetch,
                               worker_init_fn=_quiet_worker, multiprocessing_context=_context()))

    def __call__(self, step: int):
        if step != self._next:
            self._iter = self._loader(step)
        self._next = step + 1
        return next(self._iter)
