"""Content keys, completion markers and atomic publishing of stage outputs (DESIGN §2)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
KEY_LENGTH = 16
_VERSIONED = ("gtforge", "torch", "numpy", "h5py", "luigi", "opencv-python-headless", "pyiqa")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot put {type(value).__name__} into a cache key")


def stage_key(stage: str, version: int, params: Mapping[str, Any],
              inputs: Mapping[str, str]) -> str:
    """Short hex hash of everything that decides a stage's output.

    `inputs` maps an input's role to that input's own key, so a change anywhere upstream
    moves every downstream key.
    """
    doc = {"stage": stage, "version": version, "params": params, "inputs": inputs}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:KEY_LENGTH]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def list_files(root: Path) -> list[dict]:
    """Every file under `root` (manifest excluded) with its size and sha256, sorted by path."""
    rows = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != MANIFEST):
        rows.append({"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size,
                     "sha256": sha256_file(path)})
    return rows


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary sibling, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish(partial: Path, final: Path, manifest: dict) -> None:
    """Finish a stage: list and hash its files, write the manifest last, rename into place.

    If another worker published the same key first, its (identical) output is kept.
    """
    partial, final = Path(partial), Path(final)
    for leftover in partial.rglob("*.tmp"):  # half-written files of a killed resumable run
        leftover.unlink()
    manifest = {**manifest, "files": list_files(partial), "versions": package_versions(),
                "published": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(partial / MANIFEST, manifest)
    try:
        os.rename(partial, final)
    except OSError:
        if not is_complete(final):
            raise
        shutil.rmtree(partial, ignore_errors=True)
