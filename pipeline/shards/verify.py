"""Verifying a shard set against its manifest (`gtforge verify`)."""

from __future__ import annotations

from pathlib import Path

import h5py

from pipeline.shards.spec import (
    MANIFEST,
    SHARD_GLOB,
    ShardError,
    check_shard_schema,
    read_manifest,
)
from pipeline.store import durable


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
                check_shard_schema(f, manifest, entry["samples"])
        except ShardError as e:
            raise ShardError(f"{path}: {e}") from None
        except (OSError, KeyError, ValueError) as e:
            raise ShardError(f"{path}: not a readable format v1 shard: {e}") from None
    extra = sorted(p.name for p in out_dir.glob(SHARD_GLOB) if p.name not in listed)
    if extra:
        raise ShardError(f"{out_dir / extra[0]}: shard file not listed in the manifest")
    total = sum(s["samples"] for s in manifest["shards"])
    if total != manifest["samples"]:
        raise ShardError(f"{out_dir / MANIFEST}: samples {manifest['samples']} is not the sum "
                         f"over its shards ({total})")
