"""PyTorch access to a shard folder (format v1 or v2): a Dataset with paired, scale-aware random
crops, flips/rotations and HGGT's target rule, and a batch sampler that keeps each DataLoader
worker on few shards at a time.

    loader = DataLoader(ds := ShardDataset("data/out/demo", crop=64),
                        batch_sampler=ShardBatchSampler(ds, batch_size=16, num_workers=2),
                        num_workers=2, persistent_workers=True)

HDF5 files are opened lazily in the process that reads them (each worker opens its own), never
before a fork; see pipeline.shards.reader.ShardSet.

With `dtype="uint8"` the workers hand over uint8 images (a quarter of the bytes through the
DataLoader's shared memory, which is what limits a multi-worker loader) and `to_float` makes
them float32 in [0,1] on the training device:

    for batch in DataLoader(ShardDataset(root, crop=128, dtype="uint8"), ...):
        batch = to_float(batch, "cuda")
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.shards.reader import ShardSet
from pipeline.store.seeding import rng

TARGETS = ("hggt", "original")
LQ_SOURCES = ("lq", "lq_vqvae", "random")
DTYPES = ("float32", "uint8")
IMAGE_KEYS = ("gt", "lq", "original", "negatives")


def crop_box(rand: np.random.Generator, lr_size: int, lr_crop: int) -> tuple[int, int]:
    """Random top-left corner (x, y) of an `lr_crop` window in an `lr_size` LR image (LR px);
    the paired HR window starts at scale times that, so the two stay aligned."""
    if lr_crop > lr_size:
        raise ValueError(f"crop of {lr_crop} LR pixels is larger than the {lr_size}-pixel patch")
    x, y = rand.integers(0, lr_size - lr_crop + 1, size=2)
    return int(x), int(y)


def augment(image: np.ndarray, flips: tuple[bool, bool, bool]) -> np.ndarray:
    """BasicSR's augmentation on an HWC (or NHWC) array: horizontal flip, vertical flip,
    transpose (together the 8 rotations/reflections). Returns a view."""
    hflip, vflip, transpose = flips
    if hflip:
        image = image[..., :, ::-1, :]
    if vflip:
        image = image[..., ::-1, :, :]
    if transpose:
        image = np.swapaxes(image, -3, -2)
    return image


def to_tensor(image: np.ndarray, dtype: str = "float32") -> torch.Tensor:
    """uint8 RGB HWC (or NHWC) -> RGB CHW (or NCHW): float32 in [0,1], or with
    `dtype="uint8"` the same 0-255 values (for `to_float` on the training device)."""
    chw = np.moveaxis(image, -1, -3)
    if dtype == "uint8":
        return torch.from_numpy(np.ascontiguousarray(chw))
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32)).mul_(1 / 255)


def to_float(batch: dict, device: torch.device | str = "cpu") -> dict:
    """A collated batch with every tensor on `device` and the uint8 images (`gt`, `lq`,
    `original`, `negatives`) as float32 in [0,1]; the conversion runs on `device`."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if key in IMAGE_KEYS and value.dtype == torch.uint8:
                value = value.float().mul_(1 / 255)
        out[key] = value
    return out


class ShardDataset(Dataset):
    """Samples of a shard folder as dicts of tensors (float32 RGB CHW in [0,1]):

    - `gt` (3,crop,crop): the target. `target="hggt"` (HGGT's rule): a random Positive
      candidate per draw, the original when the sample has none; `"original"`: always the
      original; a candidate name (e.g. "fused"): always that candidate.
    - `lq` (3,crop/s,crop/s): the paired LR input, from `lq_source` = "lq" (DegradeLR),
      "lq_vqvae" (VQ-VAE-2) or "random" (either, per draw).
    - with `negatives=True`: `negatives` (K,3,crop,crop), the Negative candidates (zeros
      elsewhere) and `negative_mask` (K,) bool, for HGGT's negative loss.
    - with `scores=True`: `scores` (K+1,M) float32 (row 0 = original) and `target_scores` (M,).
    - with `original=True`: `original` (3,crop,crop), the original GT of the same crop (for
      losses that compare the candidates with it, such as HGGT's negative-map weights).
    - with `indices=True`: `target_index` (0 = original, k+1 = candidate k) and `index`
      (the global sample index), ints (int64 tensors once collated). Off by default: with
      DataLoader workers every extra tensor in a batch is one more shared-memory handover
      (these two cost a quarter of the samples/s with 2 workers; docs/PERFORMANCE.md).

    `crop` is the GT side in HR pixels (a multiple of the scale; None = the whole patch).
    Crops, flips and rotations are random per draw and shared by every image of the sample,
    drawn from torch's generator (seeded per worker by the DataLoader; `torch.manual_seed`
    makes a run repeat). `flip`/`rotate` switch augmentation off. `dtype="uint8"` returns
    the images as uint8 CHW 0-255 instead (convert batches with `to_float`).
    """

    def __init__(self, root: Path, crop: int | None = None, *, target: str = "hggt",
                 lq_source: str = "lq", negatives: bool = False, scores: bool = False,
                 original: bool = False, indices: bool = False, flip: bool = True,
                 rotate: bool = True, dtype: str = "float32", max_open: int = 32):
        self.shards = ShardSet(Path(root), max_open=max_open)
        s, size = self.shards.scale, self.shards.patch_size
        self.crop = size if crop is None else int(crop)
        if self.crop % s or not 0 < self.crop <= size:
            raise ValueError(f"crop {crop} must be a multiple of the scale {s} and at most the "
                             f"patch size {size}")
        names = self.shards.candidate_names
        if target not in TARGETS and target not in names:
            raise ValueError(f"target {target!r}: use one of {TARGETS} or a candidate {names}")
        if lq_source not in LQ_SOURCES:
            raise ValueError(f"lq_source {lq_source!r}: use one of {LQ_SOURCES}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: use one of {DTYPES}")
        self.target, self.lq_source = target, lq_source
        self.negatives, self.scores, self.original = negatives, scores, original
        self.indices = indices
        self.flip, self.rotate, self.dtype = flip, rotate, dtype

    @property
    def scale(self) -> int:
        return self.shards.scale

    @property
    def candidate_names(self) -> list[str]:
        return self.shards.candidate_names

    def __len__(self) -> int:
        return len(self.shards)

    def draw(self, index: int, rand: np.random.Generator) -> dict[str, np.ndarray | int]:
        """One augmented sample as uint8 HWC arrays (before tensor conversion): gt, lq,
        negatives (K,h,w,3) and original when asked, plus target_index, negative_mask,
        scores, and lq_source (the LR dataset used)."""
        shard_no, n = self.shards.locate(index)
        shard = self.shards.shard(shard_no)
        labels = shard.labels[n]
        if self.target == "hggt":
            positives = np.flatnonzero(labels == 1)
            k = int(rand.choice(positives)) if len(positives) else -1
        elif self.target == "original":
            k = -1
        else:
            k = self.candidate_names.index(self.target)
        s, lr_crop = self.scale, self.crop // self.scale
        x, y = crop_box(rand, self.shards.patch_size // s, lr_crop)
        h, v, t = rand.integers(0, 2, size=3).tolist()
        flips = (self.flip and bool(h), self.flip and bool(v), self.rotate and bool(t))
        lq_name = self.lq_source
        if lq_name == "random":
            lq_name = ("lq", "lq_vqvae")[int(rand.integers(2))]

        def hr(image: np.ndarray) -> np.ndarray:
            return augment(image[y * s:(y + lr_crop) * s, x * s:(x + lr_crop) * s], flips)

        gt = shard.image("gt_original", n) if k < 0 else shard.image("gt_candidates", n, k)
        out: dict[str, np.ndarray | int] = {
            "gt": hr(gt),
            "lq": augment(shard.image(lq_name, n)[y:y + lr_crop, x:x + lr_crop], flips),
            "target_index": k + 1, "index": index, "lq_source": lq_name}
        if self.original:
            out["original"] = out["gt"] if k < 0 else hr(shard.image("gt_original", n))
        if self.negatives:
            mask = labels == -1
            negs = np.zeros((len(labels), self.crop, self.crop, 3), np.uint8)
            for j in np.flatnonzero(mask):
                negs[j] = hr(shard.image("gt_candidates", n, int(j)))
            out["negatives"], out["negative_mask"] = negs, mask
        if self.scores:
            out["scores"] = shard.scores[n]
            out["target_scores"] = shard.scores[n, k + 1]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        sample = self.draw(int(index), np.random.default_rng(seed))
        out = {key: to_tensor(sample[key], self.dtype) for key in IMAGE_KEYS if key in sample}
        if self.indices:
            out["target_index"], out["index"] = sample["target_index"], sample["index"]
        if self.negatives:
            out["negative_mask"] = torch.from_numpy(sample["negative_mask"])
        if self.scores:
            out["scores"] = torch.from_numpy(np.array(sample["scores"], np.float32))
            out["target_scores"] = torch.from_numpy(np.array(sample["target_scores"], np.float32))
        return out


class ShardBatchSampler(Sampler[list[int]]):
    """Batches of sample indices (use as `DataLoader(batch_sampler=...)`) that keep every
    worker on `shards_at_a_time` shards at once.

    Per epoch (`set_epoch`), the shards are shuffled and dealt to `num_workers` streams
    (balanced by sample count); each stream walks its shards in groups of `shards_at_a_time`,
    shuffling the samples inside a group. The DataLoader sends batch b to worker
    b % num_workers, so the stream batches are interleaved in that order: each worker reads
    from its own few open shards. Every sample appears exactly once per epoch; the batches
    that do not fill up are put together at the end (dropped with `drop_last`).
    """

    def __init__(self, dataset: ShardDataset | ShardSet, batch_size: int, num_workers: int = 0,
                 *, shards_at_a_time: int = 1, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        shards = dataset.shards if isinstance(dataset, ShardDataset) else dataset
        if batch_size < 1 or shards_at_a_time < 1:
            raise ValueError("batch_size and shards_at_a_time must be >= 1")
        self.counts, self.starts = shards.counts, shards.starts
        self.batch_size, self.streams = batch_size, max(1, num_workers)
        self.shards_at_a_time, self.shuffle, self.seed = shards_at_a_time, shuffle, seed
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rand = rng("ShardBatchSampler", self.seed, self.epoch)
        order = rand.permutation(len(self.counts)) if self.shuffle else np.arange(len(self.counts))
        streams: list[list[int]] = [[] for _ in range(self.streams)]
        loads = np.zeros(self.streams, np.int64)
        for shard in order:                    # deal shards to the least loaded stream
            w = int(np.argmin(loads))
            streams[w].append(int(shard))
            loads[w] += self.counts[shard]
        per_stream, tails = [], []
        for shards in streams:
            indices: list[int] = []
            for g in range(0, len(shards), self.shards_at_a_time):
                group = np.concatenate([np.arange(self.starts[s], self.starts[s] + self.counts[s])
                                        for s in shards[g:g + self.shards_at_a_time]])
                indices += (rand.permutation(group) if self.shuffle else group).tolist()
            full = len(indices) // self.batch_size * self.batch_size
            per_stream.append([indices[i:i + self.batch_size]
                               for i in range(0, full, self.batch_size)])
            tails += indices[full:]
        # Round robin over the streams; a stream that ran out is skipped (only the last few
        # batches of an epoch then land on another worker).
        out = [stream[j] for j in range(max(map(len, per_stream), default=0))
               for stream in per_stream if j < len(stream)]
        tail_batches = [tails[i:i + self.batch_size] for i in range(0, len(tails), self.batch_size)]
        if self.drop_last and tail_batches and len(tail_batches[-1]) < self.batch_size:
            tail_batches.pop()
        return out + tail_batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        total = int(self.counts.sum())
        return total // self.batch_size if self.drop_last else -(-total // self.batch_size)
