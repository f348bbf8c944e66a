"""Shard format v1 (DESIGN §3, docs/SHARDS.md): the layout, the manifest and the checks
every reader and the writer share.

A shard set is a folder of `shard-00000.h5`, `shard-00001.h5`, ... and `manifest.json`
(written last). Every shard holds N samples of:

    gt_original    (N,H,W,3)       uint8 RGB   the HR crop as photographed
    gt_candidates  (N,K,H,W,3)     uint8 RGB   enhanced versions, attr candidate_names (K)
    labels         (N,K)           int8        +1 Positive, 0 Similar, -1 Negative
    vote_counts    (N,K,3)         uint8       annotators voting -1, 0, +1 (format 1.1)
    scores         (N,K+1,M)       float32     index 0 = original, attrs metric_names (M),
                                               metric_lower_better, metric_modes and
                                               metric_margins (1.1)
    lq             (N,H/s,W/s,3)   uint8 RGB   degraded LR input (s = scale)
    lq_vqvae       (N,H/s,W/s,3)   uint8 RGB   VQ-VAE-2 degraded LR input
    meta           (N,)            compound    image_id S16, x/y int32 (HR px), source_index int32
    sources        (S,)            bytes       UTF-8 source paths, indexed by meta.source_index

Image arrays are chunked one image per chunk (`gt_candidates` one candidate of one sample per
chunk), so a random read touches one chunk. No object, variable-length or pickled types: every
string is fixed-length UTF-8 bytes. Root attributes `format_minor_version` (1: vote_counts, the
metric attributes and `provenance`, the JSON of every upstream stage's settings) — a reader of
version 1.0 ignores them and a 1.x reader reads 1.0 sets. Every file is fsync'd before the
rename that makes it visible, and the folder after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "gtforge-shards"


FORMAT_VERSION = 1


FORMAT_MINOR_VERSION = 1


MANIFEST = "manifest.json"


SHARD_GLOB = "shard-*.h5"


IMAGE_ID_BYTES = 16


META_DTYPE = np.dtype([("image_id", f"S{IMAGE_ID_BYTES}"), ("x", "<i4"), ("y", "<i4"),
                       ("source_index", "<i4")])


IMAGES = ("gt_original", "gt_candidates", "lq", "lq_vqvae")


TABLES = ("labels", "vote_counts", "scores", "meta")


VOTE_COLUMNS = ("negative", "similar", "positive")


# NR: scored alone; FR: a distortion against the original (can only say worse); pairwise: a
# judgement of candidate against original (0 for the original itself, either sign).
METRIC_MODES = ("NR", "FR", "pairwise")


# Datasets a reader of minor version 0 did not have.
ADDED_IN_MINOR = {"vote_counts": 1}


COMPRESSIONS = (None, "lzf", "gzip")


class ShardError(RuntimeError):
    """A shard set that does not match its manifest or the format; the message names the file."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def sample_layout(patch_size: int, scale: int, k: int, m: int,
                  minor: int = FORMAT_MINOR_VERSION) -> dict[str, tuple[tuple, np.dtype]]:
    """Per-sample (shape, dtype) of every dataset of format 1.`minor`, in file order."""
    if patch_size % scale:
        raise ValueError(f"patch_size {patch_size} is not a multiple of scale {scale}")
    h, lr = patch_size, patch_size // scale
    u8 = np.dtype(np.uint8)
    layout = {"gt_original": ((h, h, 3), u8), "gt_candidates": ((k, h, h, 3), u8),
              "labels": ((k,), np.dtype(np.int8)), "vote_counts": ((k, 3), u8),
              "scores": ((k + 1, m), np.dtype("<f4")), "lq": ((lr, lr, 3), u8),
              "lq_vqvae": ((lr, lr, 3), u8), "meta": ((), META_DTYPE)}
    return {name: spec for name, spec in layout.items() if ADDED_IN_MINOR.get(name, 0) <= minor}


def minor_version(attrs_or_manifest) -> int:
    """The format's minor version of a shard (its root attributes) or a manifest: 0 when
    absent (sets written before minor versions existed)."""
    return int(attrs_or_manifest.get("format_minor_version", 0))


def fixed_strings(values: list[str]) -> np.ndarray:
    """A list of str as fixed-length UTF-8 bytes (the only string type in the format). Surrogate
    escapes (os.fsdecode of a file name that is not UTF-8) become their original bytes."""
    encoded = [v.encode("utf-8", "surrogateescape") for v in values]
    width = max([len(e) for e in encoded] + [1])
    return np.array(encoded, dtype=h5py.string_dtype("utf-8", width)).reshape(len(encoded))


def fixed_string(value: str) -> np.ndarray:
    """A scalar str as a fixed-length UTF-8 attribute value."""
    return np.array(value.encode(), dtype=h5py.string_dtype("utf-8", max(len(value.encode()), 1)))


def text(value: Any) -> str:
    """An attribute value read back by h5py (bytes, numpy bytes or str) as str."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode() if isinstance(value, bytes | np.bytes_) else str(value)


def texts(value: Any) -> list[str]:
    """An attribute holding a list of strings, as list[str]."""
    return [text(v) for v in np.atleast_1d(value)]


def read_manifest(out_dir: Path) -> dict:
    """manifest.json of a shard set; ShardError when missing, unreadable or of another format."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no manifest (not a shard set, or an unfinished one)") from None
    except (OSError, ValueError) as e:
        raise ShardError(f"{path}: unreadable manifest: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format_version {manifest.get('format_version')} is not "
                         f"supported by this reader (version {FORMAT_VERSION})")
    return manifest


def check_shard_schema(f: h5py.File, manifest: dict, samples: int) -> None:
    """Raise ShardError (without the file name) when `f` does not match format v1 and the
    manifest's sizes, names and sample count."""
    if text(f.attrs.get("format", "")) != FORMAT:
        raise ShardError(f"root attribute format is {text(f.attrs.get('format', ''))!r}")
    if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
        raise ShardError(f"root attribute format_version is {f.attrs.get('format_version')}")
    if int(f.attrs.get("scale", -1)) != manifest["scale"]:
        raise ShardError(f"scale {f.attrs.get('scale')} differs from the manifest's "
                         f"{manifest['scale']}")
    minor = minor_version(f.attrs)
    if minor != minor_version(manifest):
        raise ShardError(f"format_minor_version {minor} differs from the manifest's "
                         f"{minor_version(manifest)}")
    layout = sample_layout(manifest["patch_size"], manifest["scale"],
                           len(manifest["candidate_names"]), len(manifest["metric_names"]), minor)
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
    if minor >= 1 and texts(f["scores"].attrs.get("metric_modes", [])) != \
            manifest["metric_modes"]:
        raise ShardError("scores.attrs['metric_modes'] differs from the manifest")
    sources = f["meta"]["source_index"] if samples else np.zeros(0, np.int32)
    if sources.size and (sources.min() < 0 or sources.max() >= len(manifest["sources"])):
        raise ShardError("meta.source_index points outside the manifest's sources")
