"""Patches of several aligned versions of one photo (the original and its candidate GTs), in
chunks, without holding the versions decoded together: each is decoded once and spilled to a
raw scratch file, and every chunk reads back only the rows its patches cover. Memory: one
decoded photo while spilling, then one row band of one version and the chunk's patches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.store.imageio import read_rgb, read_rgb_sized


def _spill(paths: Sequence[Path], scratch: Path) -> tuple[list[Path], tuple[int, ...]]:
    """Decode every version into scratch/<i>.raw (uint8 HWC bytes); their common shape."""
    files, shape = [], None
    for i, path in enumerate(paths):
        rgb = read_rgb(path) if shape is None else read_rgb_sized(path, shape, paths[0].name)
        shape = rgb.shape
        files.append(scratch / f"{i}.raw")
        rgb.tofile(files[-1])
        del rgb
    return files, shape


def version_chunks(paths: Sequence[Path], xs: Sequence[int], ys: Sequence[int], size: int,
                   chunk: int, scratch: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(patch indices (n,), crops uint8 (n, V, size, size, 3)) for the patches at (xs, ys)
    of the V versions `paths` (path 0 the original; all of its size), at most `chunk`
    patches at a time in row order. `scratch`: an existing folder for the raw copies (removed
    by the caller). ValueError for a patch past the border or a version of another size."""
    files, (h, w, _) = _spill(paths, scratch)
    xs, ys = np.asarray(xs, int), np.asarray(ys, int)
    bad = np.flatnonzero((xs < 0) | (ys < 0) | (xs + size > w) | (ys + size > h))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"patch {i} at x={xs[i]}, y={ys[i]}, size {size} passes the border "
                         f"of the {w}x{h} image {paths[0].name}")
    order = np.lexsort((xs, ys))
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        y0, y1 = int(ys[idx].min()), int(ys[idx].max()) + size
        out = np.empty((len(idx), len(files), size, size, 3), np.uint8)
        for v, file in enumerate(files):
            band = np.fromfile(file, np.uint8, (y1 - y0) * w * 3, offset=y0 * w * 3)
            band = band.reshape(y1 - y0, w, 3)
            for j, i in enumerate(idx):
                out[j, v] = band[ys[i] - y0:ys[i] - y0 + size, xs[i]:xs[i] + size]
            del band
        yield idx, out
