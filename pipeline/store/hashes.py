"""The sha256 of input files, remembered between runs: a file is hashed again only when its
size or modification time changed. The content decides the keys; size and mtime only decide
whether the remembered hash can be trusted."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.store import durable


class HashCache:
    """{absolute path: [size, mtime_ns, sha256]} kept in a JSON file (`path`); `save()` writes
    it back atomically when something was hashed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._rows = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._rows = {}  # none yet, or unreadable: every file is hashed again
        self._changed = False

    def sha256(self, file: Path) -> str:
        """The hex sha256 of `file`'s content; OSError when it cannot be read."""
        st = os.stat(file)
        name = os.fsdecode(Path(file).resolve())
        row = self._rows.get(name)
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return row[2]
        digest = durable.sha256_file(Path(file))
        self._rows[name] = [st.st_size, st.st_mtime_ns, digest]
        self._changed = True
        return digest

    def save(self) -> None:
        if self._changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable.write_json(self.path, self._rows)
            self._changed = False
