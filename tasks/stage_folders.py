"""The stage folders a DAG uses, on disk: their state and size, the folders no stage uses any
more, and invalidation of a stage and everything downstream (`gtforge cache ...`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import luigi
from luigi.task import flatten

from pipeline.store import cache
from tasks import graph
from tasks.base import Stage
from tasks.config import gtforge


@dataclass(frozen=True)
class StageFolder:
    """One stage of the DAG and its folders. state: done | partial (a killed or running build
    left files, e.g. training checkpoints) | missing."""

    family: str
    name: str  # the family with its parameters (graph.label)
    key: str
    task_id: str
    path: Path
    state: str
    bytes: int

    @property
    def partial_path(self) -> Path:
        return self.path.with_name(cache.PARTIAL_PREFIX + self.key)


def stage_folders(root: luigi.Task) -> list[StageFolder]:
    """Every stage the DAG of `root` uses with its key, folder, state and size on disk."""
    rows = []
    for stage in graph.stages(root):
        if cache.is_complete(stage.out_dir):
            state, size = "done", cache.folder_bytes(stage.out_dir)
        elif stage.partial_dir.exists():
            state, size = "partial", cache.folder_bytes(stage.partial_dir)
        else:
            state, size = "missing", 0
        rows.append(StageFolder(stage.get_task_family(), graph.label(stage), stage.key,
                                stage.task_id, stage.out_dir, state, size))
    return rows


def unreferenced(root: luigi.Task, workdir: Path | None = None) -> list[Path]:
    """Key folders (complete or partial) under the workdir that the DAG of `root` does not use,
    and trash left by an interrupted removal. Other files are never listed."""
    workdir = Path(workdir or gtforge().workdir)
    used: set[Path] = set()
    for stage in graph.stages(root):
        used |= {stage.out_dir.resolve(), stage.partial_dir.resolve()}
    if not workdir.is_dir():
        return []
    found = []
    for stage_root in sorted(p for p in workdir.iterdir() if p.is_dir()):
        found += [p for p in cache.key_folders(stage_root) if p.resolve() not in used]
    return found


def invalidate(root: luigi.Task, name: str, dry_run: bool = False) -> list[Path]:
    """Remove the outputs of stage `name` (family or key) and of everything downstream of it,
    so the next build recomputes them: stage folders, their partial folders (checkpoints
    included), and the file outputs of tasks without a key (e.g. PublishDataset's build.json).
    Returns what was (or, with dry_run, would be) removed."""
    removed: list[Path] = []
    for task in graph.downstream(root, name):
        if isinstance(task, Stage):
            paths = [p for p in (task.out_dir, task.partial_dir) if p.exists()]
        else:
            paths = [Path(t.path) for t in flatten(task.output())
                     if isinstance(t, luigi.LocalTarget) and Path(t.path).is_file()]
        for path in paths:
            if not dry_run:
                if path.is_dir():
                    cache.remove_folder(path)
                else:
                    path.unlink()
            removed.append(path)
    return removed
