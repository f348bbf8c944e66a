"""Stage folders (DESIGN §2): content keys, completion markers, atomic publishing, and the
folder operations of the cache tools (sizes, removal that never looks half-done, verification)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.store import durable

MANIFEST = "manifest.json"
KEY_LENGTH = 16
KEY_NAME = re.compile(rf"^[0-9a-f]{{{KEY_LENGTH}}}$")
PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"
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


def folder_bytes(path: Path) -> int:
    """Total size of the files below `path` (0 if it does not exist); links are not followed."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed while we walk
                pass
    return total


def human_size(n: float) -> str:
    """1536 -> '1.5 KB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def key_folders(stage_root: Path) -> Iterable[Path]:
    """The key folders, partial folders and trash of one stage root; nothing else."""
    for path in sorted(stage_root.iterdir()):
        name = path.name
        own = KEY_NAME.match(name) or name.startswith((PARTIAL_PREFIX, TRASH_PREFIX))
        if path.is_dir() and own:
            yield path


def remove_folder(path: Path) -> None:
    """Delete a stage folder so that it never looks half-there: rename it to a trash name first
    (one atomic step: a complete output stops being complete), then delete the trash."""
    path = Path(path)
    if not path.exists():
        return
    trash = path if path.name.startswith(TRASH_PREFIX) else \
        path.with_name(f"{TRASH_PREFIX}{path.name.lstrip('.')}-{os.getpid()}")
    if trash != path:
        os.rename(path, trash)
    shutil.rmtree(trash)
    parent = trash.parent
    if parent.exists() and not any(parent.iterdir()):
        parent.rmdir()


def verify_output(stage_dir: Path) -> list[str]:
    """Problems of a complete stage folder against its manifest: a listed file missing, with
    another size or sha256, or a file present but not listed (e.g. a temporary left over).
    An empty list means the folder is exactly what its stage published."""
    stage_dir = Path(stage_dir)
    if not is_complete(stage_dir):
        return [f"{stage_dir}: no {MANIFEST} (not a complete stage output)"]
    listed = {row["path"]: row for row in read_manifest(stage_dir)["files"]}
    present = {p.relative_to(stage_dir).as_posix() for p in stage_dir.rglob("*")
               if p.is_file() and p.name != MANIFEST}
    problems = [f"{stage_dir}: {p} is not in the manifest" for p in sorted(present - set(listed))]
    problems += [f"{stage_dir}: {p} is missing" for p in sorted(set(listed) - present)]
    for path in sorted(present & set(listed)):
        row, file = listed[path], stage_dir / path
        if file.stat().st_size != row["bytes"] or durable.sha256_file(file) != row["sha256"]:
            problems.append(f"{stage_dir}: {path} differs from the manifest (size or sha256)")
    return problems
