"""Content keys, completion markers and atomic publishing of stage outputs (DESIGN §2)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline import durable

MANIFEST = "manifest.json"
KEY_LENGTH = 16
_VERSIONED = ("gtforge", "torch", "numpy", "h5py", "luigi", "opencv-python-headless", "pyiqa")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=durable.jsonable)


def stage_key(stage: str, version: int, params: Mapping[str, Any],
              inputs: Mapping[str, str]) -> str:
    """Short hex hash of everything that decides a stage's output.

    `inputs` maps an input's role to that input's own key, so a change anywhere upstream
    moves every downstream key.
    """
    doc = {"stage": stage, "version": version, "params": params, "inputs": inputs}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:KEY_LENGTH]


def is_complete(stage_dir: Path) -> bool:
    """A stage output is complete when its manifest exists: it is written last."""
    return (Path(stage_dir) / MANIFEST).is_file()


def read_manifest(stage_dir: Path) -> dict:
    return json.loads((Path(stage_dir) / MANIFEST).read_text())


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape outputs (read without importing them)."""
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def list_files(root: Path, sync: bool = False) -> list[dict]:
    """Every file under `root` (manifest excluded) with its size and sha256, sorted by path;
    with `sync` every file is fsync'd as it is hashed."""
    rows = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != MANIFEST):
        rows.append({"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size,
                     "sha256": durable.sha256_file(path, sync=sync)})
    return rows


def publish(partial: Path, final: Path, manifest: dict) -> None:
    """Finish a stage: hash and fsync its files and folders, write the manifest last, rename
    into place and fsync the parent folder (durable against a power cut, not only a kill).

    If another worker published the same key first, its (identical) output is kept.
    """
    partial, final = Path(partial), Path(final)
    for leftover in partial.rglob("*.tmp"):  # half-written files of a killed resumable run
        leftover.unlink()
    manifest = {**manifest, "files": list_files(partial, sync=True),
                "versions": package_versions(), "published": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for folder in sorted({p.parent for p in partial.rglob("*")} | {partial}):
        durable.fsync_dir(folder)
    durable.write_json(partial / MANIFEST, manifest)
    try:
        durable.rename(partial, final)
    except OSError:
        if not is_complete(final):
            raise
        shutil.rmtree(partial, ignore_errors=True)
