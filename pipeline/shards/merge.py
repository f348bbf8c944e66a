"""One shard set from the shard sets of several chunks: their shards linked into one folder
and one manifest.json naming them all."""

from __future__ import annotations

from pathlib import Path

from pipeline.shards.spec import MANIFEST, VOTE_COLUMNS, ShardError, read_manifest
from pipeline.store import durable

# What every chunk's manifest must agree on (the same models, settings and format).
SHARED = ("format", "format_version", "format_minor_version", "scale", "patch_size", "lq_size",
          "candidate_names", "metric_names", "metric_lower_better", "metric_modes",
          "metric_margins", "candidate_margins", "candidate_negative_margins", "compression")


def merge_sets(chunk_dirs: list[Path], dest: Path, extra: dict) -> dict:
    """Hard-link (or copy) the shards of every set in `chunk_dirs` into `dest` and write its
    manifest.json (last): the SHARED fields, the shards, sources and per-photo patch counts
    of every chunk in order, samples, bytes and label counts summed, and the keys of `extra`
    (params, provenance, the input folder's accounting). Returns the manifest. ShardError when
    the chunks disagree on a SHARED field, or a shard's name repeats."""
    manifests = [read_manifest(d) for d in chunk_dirs]
    if not manifests:
        raise ShardError(f"{dest}: no chunk to merge")
    first = manifests[0]
    for folder, m in zip(chunk_dirs, manifests, strict=True):
        differs = [k for k in SHARED if m.get(k) != first.get(k)]
        if differs:
            raise ShardError(f"{folder / MANIFEST}: {', '.join(differs)} differ from "
                             f"{chunk_dirs[0] / MANIFEST}'s")
    shards = [entry for m in manifests for entry in m["shards"]]
    names = [entry["file"] for entry in shards]
    if len(set(names)) != len(names):
        raise ShardError(f"{dest}: two chunks wrote shards of the same name")
    dest.mkdir(parents=True, exist_ok=True)
    for folder, m in zip(chunk_dirs, manifests, strict=True):
        for entry in m["shards"]:
            durable.link_file(folder / entry["file"], dest / entry["file"])
    counts = {name: dict.fromkeys(VOTE_COLUMNS, 0) for name in first["candidate_names"]}
    for m in manifests:
        for name, row in m["label_counts"].items():
            for column, n in row.items():
                counts[name][column] += n
    manifest = {
        **extra, **{k: first[k] for k in SHARED if k in first},
        "samples": sum(m["samples"] for m in manifests),
        "bytes": sum(m["bytes"] for m in manifests),
        "label_counts": counts, "shards": shards,
        "sources": [s for m in manifests for s in m["sources"]],
        "source_patches": [row for m in manifests for row in m.get("source_patches", [])],
    }
    durable.fsync_dir(dest)
    durable.write_json(dest / MANIFEST, manifest)
    return manifest
