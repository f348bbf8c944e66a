"""Writing a shard set: ShardWriter fills shards sample by sample and publishes the manifest
last (pipeline.shards.spec)."""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.shards.spec import (
    COMPRESSIONS,
    FORMAT,
    FORMAT_MINOR_VERSION,
    FORMAT_VERSION,
    IMAGE_ID_BYTES,
    IMAGES,
    MANIFEST,
    METRIC_MODES,
    SHARD_GLOB,
    TABLES,
    VOTE_COLUMNS,
    ShardError,
    sample_layout,
    shard_name,
)
from pipeline.store import durable

# Compressed shards: images are buffered and written through HDF5 in slabs of at most this size.
SLAB_BYTES = 256 << 20
IOV_MAX = 1024


def fixed_strings(values: list[str]) -> np.ndarray:
    """A list of str as fixed-length UTF-8 bytes (the only string type in the format). Surrogate
    escapes (os.fsdecode of a file name that is not UTF-8) become their original bytes."""
    encoded = [v.encode("utf-8", "surrogateescape") for v in values]
    width = max([len(e) for e in encoded] + [1])
    return np.array(encoded, dtype=h5py.string_dtype("utf-8", width)).reshape(len(encoded))


def fixed_string(value: str) -> np.ndarray:
    """A scalar str as a fixed-length UTF-8 attribute value."""
    return np.array(value.encode(), dtype=h5py.string_dtype("utf-8", max(len(value.encode()), 1)))


def shared_margins(candidate_margins: np.ndarray) -> list[float]:
    """Per metric, the margin every candidate's vote needed, NaN where candidates had their own
    (or there are none): (K,M) -> M floats."""
    rows = np.asarray(candidate_margins, np.float64)
    if not len(rows):
        return [float("nan")] * rows.shape[1]
    same = (rows == rows[0]).all(axis=0)
    return [float(v) if ok else float("nan") for v, ok in zip(rows[0], same, strict=True)]


def _by_candidate(names: list[str], margins: np.ndarray) -> dict[str, list[float | None]]:
    """(K,M) margins as {candidate: [M values]}, JSON-ready (None for NaN)."""
    return {name: [None if v != v else float(v) for v in row]
            for name, row in zip(names, margins, strict=True)}


def _chunks(name: str, per_sample: tuple, samples: int) -> tuple | None:
    """One image per chunk for image arrays; small per-sample tables in blocks of samples;
    None (contiguous) for datasets without elements (K = 0 or M = 0)."""
    if int(np.prod(per_sample)) == 0 or samples == 0:
        return None
    if name == "gt_candidates":
        return (1, 1, *per_sample[1:])
    if name in IMAGES:
        return (1, *per_sample)
    return (min(samples, 1024), *per_sample)


def _create_shard(path: Path, layout: dict, samples: int, compression: str | None,
                  attrs: dict, sources: list[str]) -> tuple[h5py.File, dict[str, np.ndarray]]:
    """A new shard file sized for `samples`, open for writing, and for uncompressed image
    datasets the byte offset of every chunk ((samples,) or (samples, K) int64): those chunks
    are allocated now (never filled) so their bytes can be written with plain pwrite."""
    f = h5py.File(path, "w")
    for key, value in attrs.items():
        f.attrs[key] = value
    f.create_dataset("sources", data=fixed_strings(sources))
    offsets = {}
    for name, (shape, dtype) in layout.items():
        chunks = _chunks(name, shape, samples)
        kwargs: dict[str, Any] = {}
        if chunks is not None:
            kwargs = {"chunks": chunks, "maxshape": (None, *shape)}
            if name in IMAGES and compression is not None:
                kwargs["compression"] = compression
            elif name in IMAGES:
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
                kwargs["dcpl"] = dcpl
        ds = f.create_dataset(name, shape=(samples, *shape), dtype=dtype, **kwargs)
        if chunks is not None and name in IMAGES and compression is None:
            found = np.full(ds.shape[:2] if name == "gt_candidates" else ds.shape[:1], -1,
                            np.int64)
            ds.id.chunk_iter(lambda info, found=found: found.__setitem__(
                info.chunk_offset[:found.ndim], info.byte_offset))
            if (found < 0).any():
                raise ShardError(f"{path}: HDF5 did not allocate every chunk of {name}")
            offsets[name] = found
    return f, offsets


class ShardWriter:
    """Writes samples into shards of `samples_per_shard` in `out_dir`, then manifest.json last.

    Each shard is first a hidden temporary file. Uncompressed image chunks are allocated when
    the shard is created; samples are held (not copied) until SLAB_BYTES of them are pending,
    then each image dataset's run of adjacent chunks goes in with one gathering pwritev;
    compressed shards go through HDF5's filters slab by slab. The
    small tables (labels, scores, meta) are kept in memory and written when the shard is
    finished; the file is then fsync'd, renamed into place and hashed (sha256) in a background
    thread while the next shard is written. A killed run leaves no file that looks like a
    shard, and no manifest; after a power cut a manifest names only files that were on disk
    before it. Use as a context manager (the manifest is written on a clean exit only; on an
    exception the open shard is dropped) or call `close()`.

    `metric_lower_better` (bools), `metric_modes` ("NR", "FR" or "pairwise") and
    `metric_margins` (the vote margins, NaN when unknown), one per metric, are written beside
    `metric_names`; `candidate_margins` (K,M), each candidate's own margins (format 1.2), when
    given, sets `metric_margins` to the margin every candidate shared (NaN where they differ);
    `candidate_negative_margins` (K,M), the margins a Negative vote needed where they are not
    those (format 2.1; default `candidate_margins`; `metric_margins` is NaN where they differ);
    `provenance` (JSON-ready: how the set was made) goes into a root attribute and the
    manifest; `manifest_extra` adds manifest keys only.
    """

    def __init__(self, out_dir: Path, *, samples_per_shard: int, patch_size: int, scale: int,
                 candidate_names: list[str], metric_names: list[str], compression: str | None,
                 params: dict, sources: list[str], metric_lower_better: list[bool] | None = None,
                 metric_modes: list[str] | None = None, metric_margins: list[float] | None = None,
                 candidate_margins: np.ndarray | None = None,
                 candidate_negative_margins: np.ndarray | None = None,
                 provenance: dict | None = None, manifest_extra: dict | None = None,
                 tag: str = ""):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        if compression == "none":
            compression = None
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of none, lzf, gzip; got {compression!r}")
        self.out_dir, self.tag = Path(out_dir), tag
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*self.out_dir.glob(SHARD_GLOB), *self.out_dir.glob(".shard-*.tmp"),
                      *self.out_dir.glob(".shard-*.compact"), self.out_dir / MANIFEST]:
            stale.unlink(missing_ok=True)
        self.samples_per_shard, self.patch_size, self.scale = samples_per_shard, patch_size, scale
        self.candidate_names, self.metric_names = list(candidate_names), list(metric_names)
        self.compression, self.params, self.sources = compression, dict(params), list(sources)
        k, m = len(self.candidate_names), len(self.metric_names)
        self._metric_attributes(metric_lower_better, metric_modes, metric_margins,
                                candidate_margins, candidate_negative_margins)
        self.provenance, self.manifest_extra = dict(provenance or {}), dict(manifest_extra or {})
        self.layout = sample_layout(patch_size, scale, k, m)
        self.attrs = {"format": fixed_string(FORMAT), "format_version": np.int32(FORMAT_VERSION),
                      "format_minor_version": np.int32(FORMAT_MINOR_VERSION),
                      "scale": np.int32(scale), "patch_size": np.int32(patch_size),
                      "params": fixed_string(json.dumps(self.params, sort_keys=True)),
                      "provenance": fixed_string(json.dumps(self.provenance, sort_keys=True))}
        self.tables = {n: np.zeros((samples_per_shard, *self.layout[n][0]), self.layout[n][1])
                       for n in TABLES}
        image_bytes = sum(int(np.prod(self.layout[n][0])) for n in IMAGES)
        self.slab = max(1, min(samples_per_shard, SLAB_BYTES // max(image_bytes, 1)))
        # samples not yet in the file: per image dataset, one contiguous array per sample
        self.pending: dict[str, list[np.ndarray]] = {n: [] for n in IMAGES}
        self.count = 0              # samples added to the open shard
        self.written = 0            # of which already in the file
        self.file: h5py.File | None = None
        self.fd: int | None = None
        self.offsets: dict[str, np.ndarray] = {}
        self.shards: list[dict] = []
        # per finished shard: its sha256, and its fsync + rename into place, both off the
        # writing thread (hashlib and fsync release the GIL)
        self.hashes: list[Future] = []
        self.renames: list[Future] = []
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-sha256")
        self.syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-fsync")
        self.label_counts = np.zeros((k, 3), np.int64)   # columns: -1, 0, +1
        self.closed = False
        self.manifest: dict | None = None

    def _metric_attributes(self, lower_better: list[bool] | None, modes: list[str] | None,
                           margins: list[float] | None,
                           candidate_margins: np.ndarray | None,
                           negative_margins: np.ndarray | None) -> None:
        """Check and keep the per-metric attributes (defaults: higher-better NR metrics with
        unknown margins) and the (K,M) candidate margins of each sign."""
        k, m = len(self.candidate_names), len(self.metric_names)
        self.lower_better = [bool(v) for v in (lower_better or [False] * m)]
        self.metric_modes = list(modes or ["NR"] * m)
        self.candidate_margins = np.full((k, m), np.nan, np.float32)
        self.negative_margins = np.full((k, m), np.nan, np.float32)
        if candidate_margins is not None:
            self.candidate_margins[...] = candidate_margins  # raises on a (K,M) mismatch
            self.negative_margins[...] = (candidate_margins if negative_margins is None
                                          else negative_margins)
            same = np.where(self.negative_margins == self.candidate_margins,
                            self.candidate_margins, np.nan)
            margins = shared_margins(same)
        self.margins = [float(v) for v in (margins or [float("nan")] * m)]
        if not len(self.lower_better) == len(self.metric_modes) == len(self.margins) == m:
            raise ValueError(f"metric_lower_better, metric_modes and metric_margins need {m} "
                             "values each")
        unknown = set(self.metric_modes) - set(METRIC_MODES)
        if unknown:
            raise ValueError(f"metric modes {sorted(unknown)}: known are {METRIC_MODES}")

    # -- adding samples ------------------------------------------------------------------
    def add(self, gt_original: np.ndarray, gt_candidates: np.ndarray, labels: np.ndarray,
            scores: np.ndarray, lq: np.ndarray, lq_vqvae: np.ndarray, image_id: str, x: int,
            y: int, source_index: int, vote_counts: np.ndarray | None = None) -> None:
        """Append one sample. Images uint8 RGB HWC: gt_original (H,W,3), gt_candidates
        (K,H,W,3), lq and lq_vqvae (H/s,W/s,3); labels (K,) in {-1,0,1}; scores (K+1,M)
        float32; (x, y) the crop's top-left corner in HR pixels of source `source_index`;
        vote_counts (K,3) how many annotators voted -1, 0, +1 (None: no votes recorded,
        stored as zeros)."""
        if vote_counts is None:
            vote_counts = np.zeros(self.layout["vote_counts"][0], np.uint8)
        if self.closed:
            raise RuntimeError("ShardWriter.add after close")
        where = f"sample {image_id} ({x},{y})"
        images = {"gt_original": gt_original, "gt_candidates": gt_candidates, "lq": lq,
                  "lq_vqvae": lq_vqvae}
        for name, value in [*images.items(), ("labels", labels), ("vote_counts", vote_counts),
                            ("scores", scores)]:
            if np.shape(value) != self.layout[name][0]:
                raise ValueError(f"{where}: {name} has shape {np.shape(value)}, "
                                 f"expected {self.layout[name][0]}")
        for name, value in images.items():
            if np.asarray(value).dtype != np.uint8:
                raise ValueError(f"{where}: {name} is {np.asarray(value).dtype}, expected uint8")
        labels = np.asarray(labels)
        if labels.size and (labels.dtype.kind not in "iu" or labels.min() < -1 or labels.max() > 1):
            raise ValueError(f"{where}: labels must be -1, 0 or +1, got {labels}")
        if len(image_id.encode()) > IMAGE_ID_BYTES:
            raise ValueError(f"{where}: image id is longer than {IMAGE_ID_BYTES} bytes")
        if not 0 <= source_index < len(self.sources):
            raise ValueError(f"{where}: source_index {source_index} outside the "
                             f"{len(self.sources)} sources")
        if self.file is None and self.fd is None:
            self._open_shard()
        i = self.count
        self.tables["labels"][i] = labels
        self.tables["vote_counts"][i] = vote_counts
        self.tables["scores"][i] = scores
        self.tables["meta"][i] = (image_id.encode(), x, y, source_index)
        for name, value in images.items():
            self.pending[name].append(np.ascontiguousarray(value))
        self.count += 1
        if self.count == self.samples_per_shard:
            self._finish_shard()
        elif self.count - self.written == self.slab:
            self._write_slab()

    # -- writing ---------------------------------------------------------------------------
    def _tmp_path(self, suffix: str = "tmp") -> Path:
        return self.out_dir / f".{shard_name(len(self.shards), self.tag)}.{suffix}"

    def _open_shard(self) -> None:
        self.file, self.offsets = _create_shard(
            self._tmp_path(), self.layout, self.samples_per_shard, self.compression, self.attrs,
            self.sources)
        if not self.compression:    # images go in by pwrite beside HDF5's own handle, which
            self.fd = os.open(self._tmp_path(), os.O_WRONLY)  # never touches those chunks
        self.count = self.written = 0

    def _write_slab(self) -> None:
        """Write the pending samples [written, count): through HDF5's filters when
        compressed, else with one gathering pwritev per run of chunks that lie end to end
        (HDF5 allocates them almost all in order), straight from the arrays given to add."""
        start, end = self.written, self.count
        for name in IMAGES:
            arrays, self.pending[name] = self.pending[name], []
            if not arrays or arrays[0].size == 0:     # no elements (K = 0)
                continue
            if self.compression:
                self.file[name][start:end] = np.stack(arrays)
                continue
            offsets = self.offsets[name][start:end].ravel()
            pieces = [a.reshape(-1) for sample in arrays for a in
                      (sample if name == "gt_candidates" else [sample])]   # one per chunk
            cuts = [0, *(np.flatnonzero(np.diff(offsets) != pieces[0].size) + 1), len(offsets)]
            for a, b in itertools.pairwise(cuts):
                for c in range(a, b, IOV_MAX):          # the kernel's limit per call
                    os.pwritev(self.fd, pieces[c:min(b, c + IOV_MAX)],
                               int(offsets[c]))
        self.written = end

    def _finish_shard(self) -> None:
        n, path = self.count, self._tmp_path()
        labels = self.tables["labels"][:n].astype(np.int64) + 1
        for k in range(labels.shape[1]):
            self.label_counts[k] += np.bincount(labels[:, k], minlength=3)
        self._write_slab()
        f = self.file
        if self.compression and n < self.samples_per_shard:
            for name in IMAGES:
                if f[name].chunks is not None:
                    f[name].resize(n, axis=0)
        elif not self.compression:
            os.close(self.fd)
            self.fd = None
            if n < self.samples_per_shard:
                f.close()
                path = self._compact(n)
                f = h5py.File(path, "r+")
        for name, table in self.tables.items():
            if f[name].chunks is not None:
                f[name].resize(n, axis=0)
                f[name][:] = table[:n]
        f["gt_candidates"].attrs["candidate_names"] = fixed_strings(self.candidate_names)
        f["vote_counts"].attrs["columns"] = fixed_strings(list(VOTE_COLUMNS))
        f["scores"].attrs["metric_names"] = fixed_strings(self.metric_names)
        f["scores"].attrs["metric_lower_better"] = np.asarray(self.lower_better, np.int8)
        f["scores"].attrs["metric_modes"] = fixed_strings(self.metric_modes)
        f["scores"].attrs["metric_margins"] = np.asarray(self.margins, np.float32)
        f["scores"].attrs["candidate_margins"] = self.candidate_margins
        f["scores"].attrs["candidate_negative_margins"] = self.negative_margins
        f.close()
        self.file, self.count, self.written = None, 0, 0
        final = self.out_dir / shard_name(len(self.shards), self.tag)
        self.shards.append({"file": final.name, "samples": n, "sha256": None,
                            "bytes": path.stat().st_size})
        reader = open(path, "rb")  # noqa: SIM115 - closed by _hash, whatever the rename does
        self.hashes.append(self.hasher.submit(_hash, reader))
        self.renames.append(self.syncer.submit(_sync_and_rename, path, final))

    def _compact(self, n: int) -> Path:
        """The open (uncompressed) shard holds only `n` samples: copy them into a file sized
        for `n`, so no allocated-but-empty chunk is left in the last shard."""
        old, new = self._tmp_path(), self._tmp_path("compact")
        f, offsets = _create_shard(new, self.layout, n, None, self.attrs, self.sources)
        f.close()
        src, dst = os.open(old, os.O_RDONLY), os.open(new, os.O_WRONLY)
        try:
            for name, target in offsets.items():
                size = int(np.prod(self.layout[name][0][1 if name == "gt_candidates" else 0:]))
                for source_offset, target_offset in zip(self.offsets[name][:n].ravel(),
                                                        target.ravel(), strict=True):
                    os.pwrite(dst, os.pread(src, size, int(source_offset)), int(target_offset))
        finally:
            os.close(src)
            os.close(dst)
        os.unlink(old)
        return new

    def close(self) -> dict:
        """Flush the last shard, wait for the hashes, write manifest.json (last); return it."""
        if self.closed:
            return self.manifest
        if self.count:
            self._finish_shard()
        self._wait()
        for entry, digest in zip(self.shards, self.hashes, strict=True):
            entry["sha256"], entry["sources"] = digest.result(), self.sources
        for rename in self.renames:
            rename.result()         # raises what a failed fsync or rename raised
        self.closed = True
        durable.fsync_dir(self.out_dir)  # the shards' renames, before the manifest names them
        k = len(self.candidate_names)
        self.manifest = {
            **self.manifest_extra,
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "format_minor_version": FORMAT_MINOR_VERSION,
            "scale": self.scale, "patch_size": self.patch_size,
            "lq_size": self.patch_size // self.scale,
            "candidate_names": self.candidate_names, "metric_names": self.metric_names,
            "metric_lower_better": self.lower_better, "metric_modes": self.metric_modes,
            "metric_margins": [None if v != v else v for v in self.margins],
            "candidate_margins": _by_candidate(self.candidate_names, self.candidate_margins),
            "candidate_negative_margins": _by_candidate(self.candidate_names,
                                                        self.negative_margins),
            "compression": self.compression or "none",
            "samples": sum(s["samples"] for s in self.shards),
            "bytes": sum(s["bytes"] for s in self.shards),
            "label_counts": {self.candidate_names[i]: dict(zip(("negative", "similar", "positive"),
                                                               map(int, self.label_counts[i]),
                                                               strict=True))
                             for i in range(k)},
            "shards": self.shards, "sources": self.sources, "params": self.params,
            "provenance": self.provenance,
        }
        durable.write_json(self.out_dir / MANIFEST, self.manifest)
        return self.manifest

    def abort(self) -> None:
        """Drop the open shard (its temporary file) and write no manifest."""
        if self.file is not None:
            self.file.close()
        if self.fd is not None:
            os.close(self.fd)
        self.file = self.fd = None
        self._tmp_path().unlink(missing_ok=True)
        self._tmp_path("compact").unlink(missing_ok=True)
        self._wait()
        self.closed = True

    def _wait(self) -> None:
        self.hasher.shutdown(wait=True)
        self.syncer.shutdown(wait=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _hash(reader) -> str:
    """sha256 of an open binary file (read through a memory map: no copies), then closed."""
    with reader, mmap.mmap(reader.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return hashlib.sha256(view).hexdigest()


def _sync_and_rename(path: Path, final: Path) -> None:
    """A finished shard goes on disk first, then under its name (the folder is synced once,
    before the manifest)."""
    durable.fsync_file(path)
    os.replace(path, final)
