"""Reading a shard set: ShardSet, a lazy low-level reader of samples, and the summary
`gtforge inspect` prints."""

from __future__ import annotations

import mmap
import os
import zlib
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np

from pipeline.shards.spec import (
    IMAGES,
    ShardError,
    read_manifest,
    sample_layout,
    shard_sources,
    version,
)


class ShardSet:
    """Read-only access to a shard set by global sample index.

    Only manifest.json is read on construction. HDF5 files are opened on first use in the
    process that reads (never inherited across fork: handles are reopened when the process id
    changes) and at most `max_open` stay open. Uncompressed images are memory-mapped views,
    gzip chunks are read directly (see _OpenShard), without HDF5's selection machinery.
    """

    def __init__(self, out_dir: Path, max_open: int = 32):
        self.out_dir = Path(out_dir)
        self.manifest = read_manifest(self.out_dir)
        m = self.manifest
        self.files = [self.out_dir / s["file"] for s in m["shards"]]
        self.shard_sources = [shard_sources(m, s) for s in m["shards"]]
        self.counts = np.array([s["samples"] for s in m["shards"]], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.scale, self.patch_size = int(m["scale"]), int(m["patch_size"])
        self.candidate_names, self.metric_names = m["candidate_names"], m["metric_names"]
        self.version = version(m)
        self.layout = sample_layout(self.patch_size, self.scale, len(self.candidate_names),
                                    len(self.metric_names), self.version)
        self.max_open = max_open
        self._pid: int | None = None
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"], state["_pid"] = OrderedDict(), None
        return state

    def source(self, shard: int, source_index: int) -> str:
        """The source path of a sample of shard `shard` whose meta.source_index is
        `source_index`."""
        return self.shard_sources[shard][source_index]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, index within the shard) of global sample `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} outside 0..{len(self) - 1}")
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        return shard, int(index - self.starts[shard])

    def shard(self, number: int) -> _OpenShard:
        """The open shard `number` (opened now if needed, in this process)."""
        if self._pid != os.getpid():
            self._open = OrderedDict()     # inherited handles are never used (nor closed)
            self._pid = os.getpid()
        entry = self._open.get(number)
        if entry is None:
            entry = _OpenShard(self.files[number], self.layout, int(self.counts[number]))
            self._open[number] = entry
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(number)
        return entry

    def close(self) -> None:
        if self._pid == os.getpid():
            for entry in self._open.values():
                entry.close()
        self._open = OrderedDict()


class _OpenShard:
    """One open shard: its small tables in memory, images read on demand.

    Uncompressed image chunks (one image each) are read through a read-only memory map of the
    file at the byte offsets HDF5 reports for them, so an image is a zero-copy view and a crop
    touches only its own rows; gzip chunks are read with one direct chunk read and inflated;
    anything else goes through h5py."""

    def __init__(self, path: Path, layout: dict, samples: int):
        self.path = path
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise ShardError(f"{path}: cannot open: {e}") from None
        if self.file["gt_original"].shape[0] != samples:
            raise ShardError(f"{path}: holds {self.file['gt_original'].shape[0]} samples, "
                             f"the manifest says {samples}")
        self.labels = self.file["labels"][:]
        # annotator vote counts (N,K,3) from format 1.1 on; None in a 1.0 set
        self.vote_counts = self.file["vote_counts"][:] if "vote_counts" in self.file else None
        self.scores = self.file["scores"][:]
        self.meta = self.file["meta"][:]
        self.datasets = {n: self.file[n] for n in IMAGES}
        self.direct = {n: _direct_mode(ds) for n, ds in self.datasets.items()}
        self.shapes = {n: layout[n][0][1:] if n == "gt_candidates" else layout[n][0]
                       for n in IMAGES}
        self.offsets: dict[str, np.ndarray] = {}
        for name, ds in self.datasets.items():
            if self.direct[name] == "raw":
                found = np.full(ds.shape[:2] if name == "gt_candidates" else ds.shape[:1], -1,
                                np.int64)
                ds.id.chunk_iter(lambda info, found=found: found.__setitem__(
                    info.chunk_offset[:found.ndim],
                    info.byte_offset if info.filter_mask == 0 else -1))
                if (found >= 0).all():
                    self.offsets[name] = found
        self.sizes = {n: int(np.prod(shape)) for n, shape in self.shapes.items()}
        self.map = None
        if self.offsets:    # a plain ndarray over a read-only mmap (np.memmap adds overhead)
            with open(path, "rb") as f:
                self.map = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ),
                                         np.uint8)

    def image(self, name: str, n: int, k: int | None = None) -> np.ndarray:
        """Image `name` of sample `n` (candidate `k` for gt_candidates): uint8 RGB HWC,
        read-only (a view of the file when the shard is uncompressed)."""
        shape = self.shapes[name]
        offsets = self.offsets.get(name)
        if offsets is not None:
            start = int(offsets[n] if k is None else offsets[n, k])
            return self.map[start:start + self.sizes[name]].reshape(shape)
        ds = self.datasets[name]
        if self.direct[name] == "gzip":
            mask, raw = ds.id.read_direct_chunk((n, 0, 0, 0) if k is None else (n, k, 0, 0, 0))
            if not mask:
                return np.frombuffer(zlib.decompress(raw), np.uint8).reshape(shape)
        return ds[n] if k is None else ds[n, k]

    def close(self) -> None:
        self.map = None
        try:
            self.file.close()
        except Exception:  # noqa: BLE001 - closing a handle must never mask the real error
            pass


def _direct_mode(ds: h5py.Dataset) -> str | None:
    """'raw' or 'gzip' when one chunk is one image that we can decode ourselves, else None."""
    if ds.chunks is None or ds.size == 0:
        return None
    per_image = (1, 1, *ds.shape[2:]) if ds.ndim == 5 else (1, *ds.shape[1:])
    if ds.chunks != per_image or ds.shuffle or ds.fletcher32 or ds.scaleoffset:
        return None
    if ds.compression is None:
        return "raw"
    return "gzip" if ds.compression == "gzip" else None
