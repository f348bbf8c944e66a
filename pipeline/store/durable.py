"""Writing files so that a kill never leaves half a file and a power cut never leaves a
visible name pointing at lost data: write a temporary sibling, fsync it, rename it into place,
fsync the folder that holds the new name."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to disk."""
    _fsync(path, os.O_RDONLY)


def sha256_file(path: Path, chunk: int = 1 << 20, sync: bool = False) -> str:
    """sha256 of a file's content (hex); with `sync`, the file is also fsync'd on the way."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder below `root`, and `root` itself."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(Path(folder))


def rename(src: Path, dst: Path) -> None:
    """os.rename, then fsync the destination's folder so the new name survives a power cut."""
    os.rename(src, dst)
    fsync_dir(Path(dst).parent)


def link_file(src: Path, dest: Path) -> None:
    """`dest` as a hard link to `src` (a copy where links are impossible, e.g. across file
    systems); the parent folder is created."""
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def staging_dir(dest: Path) -> Path:
    """A new, empty sibling of `dest` (.<name>.partial) to write a folder in before
    `publish_dir`; the leftover of a killed run is removed first."""
    staging = Path(dest).with_name(f".{Path(dest).name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish_dir(staging: Path, dest: Path) -> None:
    """Make `staging` visible as `dest` in one rename, durably: everything in it is fsync'd
    first; a previous `dest` is moved aside before the rename and deleted after it."""
    fsync_tree(staging)
    dest = Path(dest)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.rename(dest, old)
    rename(staging, dest)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write `data` to a temporary sibling (fsync'd when `sync`) and rename it over `path`.
    sync=False is for files inside a stage's partial folder, which `cache.publish` syncs."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)


def write_json(path: Path, value: Any, sync: bool = True) -> None:
    """`value` as indented JSON with sorted keys (ASCII: non-UTF-8 file names stay escaped)."""
    write_bytes(path, json.dumps(value, indent=1, sort_keys=True, default=jsonable).encode(),
                sync)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
              sync: bool = True) -> None:
    """Rows of dicts as CSV (columns: the first row's keys unless given; extra keys ignored).
    Writes nothing when there are no rows and no columns."""
    columns = list(columns if columns is not None else (rows[0] if rows else []))
    if not columns:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(path, text.getvalue().encode(), sync)


def jsonable(value: Any) -> Any:
    """`default` for json.dumps: mappings, tuples and sets, numpy scalars."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
