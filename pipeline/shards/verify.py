"""Verifying a shard set against its manifest (`gtforge verify`)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.shards.spec import (
    FORMAT,
    MANIFEST,
    SHARD_GLOB,
    ShardError,
    read_manifest,
    sample_layout,
    shard_sources,
    text,
    texts,
    version,
)
from pipeline.store import durable


def check_shard_schema(f: h5py.File, manifest: dict, entry: dict) -> None:
    """Raise ShardError (without the file name) when `f` does not match the format and the
    manifest's sizes, names, and its `entry`'s sample count and sources."""
    samples = entry["samples"]
    if text(f.attrs.get("format", "")) != FORMAT:
        raise ShardError(f"root attribute format is {text(f.attrs.get('format', ''))!r}")
    ver = version(f.attrs)
    if ver != version(manifest):
        raise ShardError("format version {}.{} differs from the manifest's {}.{}"
                         .format(*ver, *version(manifest)))
    if int(f.attrs.get("scale", -1)) != manifest["scale"]:
        raise ShardError(f"scale {f.attrs.get('scale')} differs from the manifest's "
                         f"{manifest['scale']}")
    layout = sample_layout(manifest["patch_size"], manifest["scale"],
                           len(manifest["candidate_names"]), len(manifest["metric_names"]), ver)
    for name, (shape, dtype) in layout.items():
        if name not in f:
            raise ShardError(f"dataset {name} is missing")
        ds = f[name]
        if ds.shape != (samples, *shape):
            raise ShardError(f"{name} has shape {ds.shape}, expected {(samples, *shape)}")
        if ds.dtype != dtype:
            raise ShardError(f"{name} has dtype {ds.dtype}, expected {dtype}")
    if texts(f["gt_candidates"].attrs.get("candidate_names", [])) != manifest["candidate_names"]:
        raise ShardError("gt_candidates.attrs['candidate_names'] differs from the manifest")
    if texts(f["scores"].attrs.get("metric_names", [])) != manifest["metric_names"]:
        raise ShardError("scores.attrs['metric_names'] differs from the manifest")
    labels = f["labels"][:]
    if labels.size and not np.isin(labels, (-1, 0, 1)).all():
        raise ShardError(f"labels hold values other than -1, 0, +1: {np.unique(labels)}")
    if ver >= (1, 1) and texts(f["scores"].attrs.get("metric_modes", [])) != \
            manifest["metric_modes"]:
        raise ShardError("scores.attrs['metric_modes'] differs from the manifest")
    sources = f["meta"]["source_index"] if samples else np.zeros(0, np.int32)
    listed = shard_sources(manifest, entry)
    if sources.size and (sources.min() < 0 or sources.max() >= len(listed)):
        raise ShardError("meta.source_index points outside the manifest's sources")
    if ver >= (2, 0) and [s.decode("utf-8", "surrogateescape") for s in f["sources"][:]] != listed:
        raise ShardError("the sources dataset differs from the manifest entry's")


def verify(out_dir: Path) -> None:
    """Check every shard against manifest.json: present, sha256, schema, sample counts, and no
    shard file the manifest does not list. Raises ShardError naming the first bad shard."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    listed = [s["file"] for s in manifest["shards"]]
    for entry in manifest["shards"]:
        path = out_dir / entry["file"]
        if not path.is_file():
            raise ShardError(f"{path}: missing (listed in the manifest)")
        digest = durable.sha256_file(path)
        if digest != entry["sha256"]:
            raise ShardError(f"{path}: sha256 {digest} does not match the manifest's "
                             f"{entry['sha256']} (file changed or corrupt)")
        try:
            with h5py.File(path, "r") as f:
                check_shard_schema(f, manifest, entry)
        except ShardError as e:
            raise ShardError(f"{path}: {e}") from None
        except (OSError, KeyError, ValueError) as e:
            raise ShardError(f"{path}: not a readable shard: {e}") from None
    extra = sorted(p.name for p in out_dir.glob(SHARD_GLOB) if p.name not in listed)
    if extra:
        raise ShardError(f"{out_dir / extra[0]}: shard file not listed in the manifest")
    total = sum(s["samples"] for s in manifest["shards"])
    if total != manifest["samples"]:
        raise ShardError(f"{out_dir / MANIFEST}: samples {manifest['samples']} is not the sum "
                         f"over its shards ({total})")
