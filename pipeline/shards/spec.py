"""Shard format v2 (DESIGN §3, docs/SHARDS.md): the layout, the manifest and the checks
every reader and the writer share.

A shard set is a folder of `shard-00000.h5`, `shard-00001.h5`, ... (or, from a chunked build,
`shard-<tag>-00000.h5`, one tag per chunk) and `manifest.json` (written last). Every shard
holds N samples of:

    gt_original    (N,H,W,3)       uint8 RGB   the HR crop as photographed
    gt_candidates  (N,K,H,W,3)     uint8 RGB   enhanced versions, attr candidate_names (K)
    labels         (N,K)           int8        +1 Positive, 0 Similar, -1 Negative
    vote_counts    (N,K,3)         uint8       annotators voting -1, 0, +1 (format 1.1)
    scores         (N,K+1,M)       float32     index 0 = original, attrs metric_names (M),
                                               metric_lower_better, metric_modes and
                                               metric_margins (1.1), candidate_margins
                                               (K,M) (1.2), candidate_negative_margins
                                               (K,M) (2.1)
    lq             (N,H/s,W/s,3)   uint8 RGB   degraded LR input (s = scale)
    lq_vqvae       (N,H/s,W/s,3)   uint8 RGB   VQ-VAE-2 degraded LR input
    meta           (N,)            compound    image_id S16, x/y int32 (HR px), source_index int32
    sources        (S,)            bytes       UTF-8 source paths, indexed by meta.source_index
                                               (the shard's own list, also its manifest
                                               entry's `sources`: 2.0; one list shared by
                                               every shard and the manifest: 1.x)

Image arrays are chunked one image per chunk (`gt_candidates` one candidate of one sample per
chunk), so a random read touches one chunk. No object, variable-length or pickled types: every
string is fixed-length UTF-8 bytes. Root attributes `format_version` and
`format_minor_version`: 1.1 added vote_counts, the metric attributes and `provenance`, the JSON
of every upstream stage's settings; 1.2 each candidate's own vote margins; 2.0 gives each shard
its own `sources` (paths relative to the input folder), so the sets of a chunked build's chunks
can be written apart and merged; 2.1 the margins a Negative vote needed, where an annotator
has one per sign. gtforge reads 1.0 to 2.1. Every file is fsync'd before the
rename that makes it visible, and the folder after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "gtforge-shards"


FORMAT_VERSION = 2


FORMAT_MINOR_VERSION = 1


READABLE_VERSIONS = (1, 2)


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


# Datasets of later versions than 1.0: (format_version, format_minor_version) they came in.
ADDED_IN = {"vote_counts": (1, 1)}


COMPRESSIONS = (None, "lzf", "gzip")


class ShardError(RuntimeError):
    """A shard set that does not match its manifest or the format; the message names the file."""


def shard_name(index: int, tag: str = "") -> str:
    """shard-00000.h5, or shard-<tag>-00000.h5 for a chunk's shards."""
    return f"shard-{tag}-{index:05d}.h5" if tag else f"shard-{index:05d}.h5"


def shard_sources(manifest: dict, entry: dict) -> list[str]:
    """The sources a shard's meta.source_index points into: its manifest entry's own (2.0),
    else the manifest's list, shared by every shard (1.x)."""
    return entry.get("sources", manifest["sources"])


def sample_layout(patch_size: int, scale: int, k: int, m: int,
                  version: tuple[int, int] = (FORMAT_VERSION, FORMAT_MINOR_VERSION)
                  ) -> dict[str, tuple[tuple, np.dtype]]:
    """Per-sample (shape, dtype) of every dataset of format `version`, in file order."""
    if patch_size % scale:
        raise ValueError(f"patch_size {patch_size} is not a multiple of scale {scale}")
    h, lr = patch_size, patch_size // scale
    u8 = np.dtype(np.uint8)
    layout = {"gt_original": ((h, h, 3), u8), "gt_candidates": ((k, h, h, 3), u8),
              "labels": ((k,), np.dtype(np.int8)), "vote_counts": ((k, 3), u8),
              "scores": ((k + 1, m), np.dtype("<f4")), "lq": ((lr, lr, 3), u8),
              "lq_vqvae": ((lr, lr, 3), u8), "meta": ((), META_DTYPE)}
    return {name: spec for name, spec in layout.items() if ADDED_IN.get(name, (1, 0)) <= version}


def version(attrs_or_manifest) -> tuple[int, int]:
    """(format_version, format_minor_version) of a shard (its root attributes) or a manifest;
    the minor version is 0 when absent (sets written before minor versions existed)."""
    return (int(attrs_or_manifest.get("format_version", -1)),
            int(attrs_or_manifest.get("format_minor_version", 0)))


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
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ShardError(f"{path}: format_version {manifest.get('format_version')} is not "
                         f"supported by this reader (versions {READABLE_VERSIONS})")
    return manifest


def summary(out_dir: Path) -> dict:
    """What `gtforge inspect` prints: shards, samples, candidates, label counts per candidate,
    image sizes, metrics, bytes. Read from the manifest (no shard is opened)."""
    m = read_manifest(out_dir)
    info = {"path": str(Path(out_dir).resolve()),
            "format_version": "{}.{}".format(*version(m)),
            "shards": len(m["shards"]), "samples": m["samples"],
            "gt_size": [m["patch_size"], m["patch_size"]], "lq_size": [m["lq_size"]] * 2,
            "scale": m["scale"], "candidates": m["candidate_names"],
            "label_counts": m["label_counts"], "metrics": m["metric_names"],
            "compression": m["compression"], "sources": len(m["sources"]), "bytes": m["bytes"]}
    if "inputs" in m:  # the input folder's entries: built, or listed with a reason
        info["inputs"] = {k: m["inputs"][k] for k in ("entries", "built", "rejected")}
    return info
