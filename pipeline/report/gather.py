"""What a report is made of, gathered from the completed stage folders of a build: the
folders and their files, the build's facts, rejected inputs and per-stage timings."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import h5py

from pipeline.image.ingest import REJECTS_JSON, display_path, read_rejects
from pipeline.quality import scores as score_table
from pipeline.report.html import StageRow
from pipeline.store import cache


@dataclass
class Done:
    """A completed upstream stage: its name (family and parameters), family, key, folder, its
    manifest.json and the files the report may use."""

    name: str
    family: str
    key: str
    folder: Path
    manifest: dict
    files: list[Path]


def done(name: str, family: str, key: str, folder: Path) -> Done:
    """A completed stage folder as the report sees it: its manifest and files read once."""
    return Done(name, family, key, folder, cache.read_manifest(folder), listing(folder))


def listing(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, except the per-image outputs in images/ folders."""
    found = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "images")
        found += [Path(dirpath) / n for n in names]
    return sorted(found)


def files_named(upstream: list[Done], pattern: str) -> list[tuple[Done, Path]]:
    """(stage, file) for every file whose name matches `pattern` in the upstream folders."""
    return [(d, p) for d in upstream for p in d.files if fnmatch(p.name, pattern)]


def score_tables(upstream: list[Done]) -> list[tuple[Done, score_table.ScoreTable]]:
    """Every upstream stage that wrote a score table, with the table; the chunks of a stage
    (stages of the same name) as one table, under the first of them."""
    groups: dict[str, list[tuple[Done, score_table.ScoreTable]]] = {}
    for d in upstream:
        if score_table.has_scores(d.folder):
            groups.setdefault(d.name, []).append((d, score_table.load(d.folder)))
    return [(rows[0][0], score_table.concatenate([t for _, t in rows]))
            for rows in groups.values()]


def shard_samples(path: Path) -> int:
    """How many samples a shard file holds."""
    with h5py.File(path, "r") as f:
        return len(f["gt_original"])


def build_facts(upstream: list[Done], settings: Mapping, candidates: str, input_dir: str,
                shard_sizes: list[int]) -> dict[str, object]:
    """The summary table's facts: preset, scale, seed, candidates, input folder, accepted and
    rejected photos, shards and samples (`shard_sizes`: samples per shard file), and the
    number of stages."""
    facts: dict[str, object] = {"preset": settings["preset"], "scale": settings["scale"],
                                "seed": settings["seed"], "candidates": candidates or "–",
                                "input folder": input_dir}
    for d in upstream:
        info = d.manifest.get("info") or {}
        if "accepted" in info:
            facts["images accepted / rejected"] = f"{info['accepted']} / {info.get('rejected', 0)}"
    if shard_sizes:
        facts["shards / samples"] = f"{len(shard_sizes)} / {sum(shard_sizes)}"
    facts["stages"] = len(upstream) + 1
    return facts


def rejects(upstream: list[Done]) -> list[dict[str, str]]:
    """Every rejected input of the upstream ingest stages: source, reason and stage."""
    return [{"source": display_path(r.get("source", "")), "reason": r.get("reason", ""),
             "stage": d.family}
            for d, _ in files_named(upstream, REJECTS_JSON) for r in read_rejects(d.folder)]


def previous_report_time(history: Path) -> float | None:
    """When the previous report of this workdir was built (epoch seconds), or None."""
    try:
        lines = history.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return float(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def append_history(history: Path, key: str) -> None:
    """One line per report: a single O_APPEND write, so concurrent reports do not interleave."""
    line = json.dumps({"time": time.time(), "key": key}) + "\n"
    fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def stage_rows(upstream: list[Done], since: float | None) -> list[StageRow]:
    """Timings from each stage's manifest. A stage counts as reused (a cache hit) when it was
    published before the previous report of this workdir; with no previous report, every
    stage was built for this one."""
    rows = []
    for d in upstream:
        published = (d.folder / cache.MANIFEST).stat().st_mtime
        rows.append(StageRow(
            family=d.name, key=d.key, seconds=d.manifest.get("seconds"),
            published=d.manifest.get("published"),
            reused=False if since is None else published < since,
            bytes=cache.folder_bytes(d.folder), settings=d.manifest.get("params", {})))
    return rows
