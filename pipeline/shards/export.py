"""Export a shard set for trainers that read image folders or BasicSR LMDBs.

Both layouts hold one entry per image kind, with the same sample names in every kind so that
any two of them pair up (BasicSR's `dataroot_gt` / `dataroot_lq`):

    kinds: gt (the original HR crop), gt_<candidate> for each candidate, lq, lq_vqvae
    name:  <global index, 7 digits>_<image id>_x<x>_y<y>      e.g. 0000017_3fa2c0d19e4b7a55_x96_y192

export_folder:  dest/<kind>/<name>.png  and  dest/<kind>/meta_info.txt
export_lmdb:    dest/<kind>.lmdb/{data.mdb, lock.mdb, meta_info.txt}  (key = name, value = PNG
                bytes of the BGR image, as BasicSR's make_lmdb_from_imgs writes them)

meta_info.txt has BasicSR's layout, one line per image: `<name>.png (<h>,<w>,3) <png level>`.
Both also write dest/samples.csv: name, source image id, x, y, source path, then per candidate
its label (+1 Positive, 0 Similar, -1 Negative) and every score (`score_<image>_<metric>`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.shards.reader import ShardSet
from pipeline.store import durable
from pipeline.store.imageio import encode_png

PNG_LEVEL = 1


def sample_names(shards: ShardSet) -> list[str]:
    """The export name of every sample, in global index order."""
    names = []
    for s in range(len(shards.files)):
        meta = shards.shard(s).meta
        start = int(shards.starts[s])
        names += [f"{start + n:07d}_{m['image_id'].decode()}_x{m['x']}_y{m['y']}"
                  for n, m in enumerate(meta)]
    return names


def image_kinds(shards: ShardSet) -> list[str]:
    return ["gt", *[f"gt_{c}" for c in shards.candidate_names], "lq", "lq_vqvae"]


def _iter_images(shards: ShardSet, kinds: list[str]) -> Iterator[tuple[int, str, np.ndarray]]:
    """(global index, kind, uint8 RGB HWC) for every sample and kind, shard by shard."""
    candidates = {f"gt_{c}": k for k, c in enumerate(shards.candidate_names)}
    for s in range(len(shards.files)):
        shard = shards.shard(s)
        for n in range(int(shards.counts[s])):
            for kind in kinds:
                if kind in candidates:
                    image = shard.image("gt_candidates", n, candidates[kind])
                else:
                    image = shard.image("gt_original" if kind == "gt" else kind, n)
                yield int(shards.starts[s]) + n, kind, image


def _check_kinds(shards: ShardSet, kinds: list[str] | None) -> list[str]:
    known = image_kinds(shards)
    kinds = known if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ValueError(f"unknown image kinds {unknown}; this shard set has {known}")
    return kinds


def _staging(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty; export into a new folder")
    return durable.staging_dir(dest)


def _write_samples_csv(shards: ShardSet, names: list[str], path: Path) -> None:
    cands, metrics = shards.candidate_names, shards.metric_names
    header = ["name", "image_id", "x", "y", "source", *[f"label_{c}" for c in cands]]
    header += [f"score_{img}_{m}" for img in ["original", *cands] for m in metrics]
    # encoding + surrogateescape: a source name that is not UTF-8 is written as its own bytes
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for s in range(len(shards.files)):
            shard, start = shards.shard(s), int(shards.starts[s])
            for n, m in enumerate(shard.meta):
                writer.writerow([names[start + n], m["image_id"].decode(), int(m["x"]), int(m["y"]),
                                 shards.source(s, int(m["source_index"])),
                                 *shard.labels[n].tolist(),
                                 *[f"{v:.6g}" for v in shard.scores[n].ravel()]])


def _prepare(shards_dir: Path, dest: Path, kinds: list[str] | None):
    """(the open ShardSet, the kinds to write, the staging folder beside `dest`, the sample
    names) of an export."""
    shards = ShardSet(Path(shards_dir))
    return shards, _check_kinds(shards, kinds), _staging(Path(dest)), sample_names(shards)


def _complete(shards: ShardSet, names: list[str], staging: Path, dest: Path,
              kinds: list[str]) -> dict:
    """Write samples.csv, close the shards and move the staging folder to `dest`; returns the
    export's summary."""
    _write_samples_csv(shards, names, staging / "samples.csv")
    shards.close()
    durable.publish_dir(staging, dest)
    return {"dest": str(dest), "samples": len(names), "kinds": kinds}


def export_folder(shards_dir: Path, dest: Path, *, kinds: list[str] | None = None,
                  png_level: int = PNG_LEVEL) -> dict:
    """Write every sample of the shard set in `shards_dir` as PNG files under `dest` (new or
    empty; written beside it and renamed into place): dest/<kind>/<name>.png with a BasicSR
    meta_info.txt per kind, and dest/samples.csv. `kinds` (default all) picks among gt,
    gt_<candidate>, lq, lq_vqvae. Returns {"dest", "samples", "kinds"}."""
    shards, kinds, staging, names = _prepare(shards_dir, dest, kinds)
    meta: dict[str, list[str]] = {k: [] for k in kinds}
    for kind in kinds:
        (staging / kind).mkdir()
    for index, kind, image in _iter_images(shards, kinds):
        (staging / kind / f"{names[index]}.png").write_bytes(encode_png(image, png_level))
        h, w, c = image.shape
        meta[kind].append(f"{names[index]}.png ({h},{w},{c}) {png_level}\n")
    for kind, lines in meta.items():
        (staging / kind / "meta_info.txt").write_text("".join(lines))
    return _complete(shards, names, staging, Path(dest), kinds)


def export_lmdb(shards_dir: Path, dest: Path, *, kinds: list[str] | None = None,
                png_level: int = PNG_LEVEL, commit_every: int = 1000) -> dict:
    """Write every sample of the shard set in `shards_dir` as BasicSR LMDBs under `dest` (new
    or empty; written beside it and renamed into place): dest/<kind>.lmdb holding PNG bytes
    keyed by sample name, with meta_info.txt, and dest/samples.csv. Point BasicSR's
    PairedImageDataset at `dest/lq.lmdb` and `dest/gt.lmdb` (or `dest/gt_<candidate>.lmdb`)
    with `io_backend: {type: lmdb}`. Returns {"dest", "samples", "kinds"}."""
    import lmdb

    shards, kinds, staging, names = _prepare(shards_dir, dest, kinds)
    # An upper bound of the PNG sizes (incompressible data grows slightly) plus page slack.
    raw = {k: shards.patch_size ** 2 * 3 if k.startswith("gt") else
           (shards.patch_size // shards.scale) ** 2 * 3 for k in kinds}
    envs, txns, meta = {}, {}, {}
    for kind in kinds:
        map_size = int(len(names) * (raw[kind] * 1.1 + 4096)) + (10 << 20)
        envs[kind] = lmdb.open(str(staging / f"{kind}.lmdb"), map_size=map_size)
        txns[kind], meta[kind] = envs[kind].begin(write=True), []
    try:
        for count, (index, kind, image) in enumerate(_iter_images(shards, kinds), 1):
            txns[kind].put(names[index].encode("ascii"), encode_png(image, png_level))
            h, w, c = image.shape
            meta[kind].append(f"{names[index]}.png ({h},{w},{c}) {png_level}\n")
            if count % commit_every == 0:
                for k in kinds:
                    txns[k].commit()
                    txns[k] = envs[k].begin(write=True)
        for kind in kinds:
            txns[kind].commit()
    finally:
        for env in envs.values():
            env.close()
    for kind, lines in meta.items():
        (staging / f"{kind}.lmdb" / "meta_info.txt").write_text("".join(lines))
    return _complete(shards, names, staging, Path(dest), kinds)
