"""The DAG as data: every task reachable from a root by requires(), and the stage folders it uses.

Used by the cache tools (`gtforge cache list|invalidate|gc|verify`) and by the Report. Nothing
here names a stage: everything is found by walking requires() from the root (BuildDataset
unless told otherwise), so new stages appear without changes here.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import luigi
from luigi.task import flatten
from luigi.task_register import Register

from pipeline import cache, durable
from tasks.base import Stage
from tasks.config import gtforge

PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"
_KEY = re.compile(rf"^[0-9a-f]{{{cache.KEY_LENGTH}}}$")


def build_root() -> luigi.Task:
    """BuildDataset(): the root of the whole build."""
    from tasks.publish import BuildDataset

    return BuildDataset()


def task_by_name(family: str, module: str | None = None) -> luigi.Task:
    """An instance (default parameters) of the task class registered as `family`, after
    importing `module` (e.g. "tasks" or a test module) so that its classes are registered."""
    importlib.import_module(module or "tasks")
    try:
        return Register.get_task_cls(family)()
    except luigi.task_register.TaskClassException as e:
        raise LookupError(f"no task named {family!r} (import its module with --module): {e}") \
            from None


def requirements(task: luigi.Task) -> list[luigi.Task]:
    """The tasks `task` requires, flattened (dicts, lists and single tasks alike)."""
    return [t for t in flatten(task.requires()) if isinstance(t, luigi.Task)]


def walk(root: luigi.Task) -> list[luigi.Task]:
    """Every task reachable from `root`, each once, inputs before the tasks that need them."""
    order: list[luigi.Task] = []
    seen: set[str] = set()

    def visit(task: luigi.Task) -> None:
        if task.task_id in seen:
            return
        seen.add(task.task_id)
        for dep in requirements(task):
            visit(dep)
        order.append(task)

    visit(root)
    return order


def label(task: luigi.Task) -> str:
    """A task's family with its significant parameters that are set, e.g.
    EnhanceHR(backbone=rcan, degradation=noise); the family alone when none are."""
    significant = {name for name, p in task.get_params() if p.significant}
    params = [f"{k}={v}" for k, v in task.param_kwargs.items()
              if v is not None and k in significant]
    return f"{task.get_task_family()}({', '.join(params)})" if params else task.get_task_family()


def stages(root: luigi.Task) -> list[Stage]:
    """The cached stages of the DAG (tasks with a key), inputs first."""
    return [t for t in walk(root) if isinstance(t, Stage)]


def provenance(root: luigi.Task) -> dict:
    """How the output of `root` is made: every stage of its DAG (inputs first) by its label
    (graph.label), with Stage.provenance(), and the installed versions of the packages that
    shape outputs. JSON-ready."""
    return {"stages": {label(t): t.provenance() for t in stages(root)},
            "versions": cache.package_versions()}


def find(root: luigi.Task, name: str) -> list[luigi.Task]:
    """Tasks of the DAG whose family is `name`, or the stage whose key is `name`."""
    return [t for t in walk(root)
            if t.get_task_family() == name or (isinstance(t, Stage) and t.key == name)]


def downstream(root: luigi.Task, name: str) -> list[luigi.Task]:
    """The tasks named `name` (family or key) and every task of the DAG that depends on them,
    directly or not; inputs first. Raises LookupError listing the DAG's families if none."""
    order = walk(root)
    if not find(root, name):
        families = sorted({t.get_task_family() for t in order})
        raise LookupError(f"no stage {name!r} in the DAG of {root.get_task_family()} "
                          f"(it has: {', '.join(families)})")
    hit: dict[str, bool] = {}
    for task in order:  # inputs come first, so their answers are known
        own = task.get_task_family() == name or (isinstance(task, Stage) and task.key == name)
        hit[task.task_id] = own or any(hit[d.task_id] for d in requirements(task))
    return [t for t in order if hit[t.task_id]]


# ---------------------------------------------------------------- stage folders on disk

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
        return self.path.with_name(PARTIAL_PREFIX + self.key)


def stage_folders(root: luigi.Task) -> list[StageFolder]:
    """Every stage the DAG of `root` uses with its key, folder, state and size on disk."""
    rows = []
    for stage in stages(root):
        if cache.is_complete(stage.out_dir):
            state, size = "done", folder_bytes(stage.out_dir)
        elif stage.partial_dir.exists():
            state, size = "partial", folder_bytes(stage.partial_dir)
        else:
            state, size = "missing", 0
        rows.append(StageFolder(stage.get_task_family(), label(stage), stage.key, stage.task_id,
                                stage.out_dir, state, size))
    return rows


def _entries(stage_root: Path) -> Iterable[Path]:
    """The key folders, partial folders and trash of one stage root; nothing else."""
    for path in sorted(stage_root.iterdir()):
        name = path.name
        if path.is_dir() and (_KEY.match(name) or name.startswith((PARTIAL_PREFIX, TRASH_PREFIX))):
            yield path


def unreferenced(root: luigi.Task, workdir: Path | None = None) -> list[Path]:
    """Key folders (complete or partial) under the workdir that the DAG of `root` does not use,
    and trash left by an interrupted removal. Other files are never listed."""
    workdir = Path(workdir or gtforge().workdir)
    used: set[Path] = set()
    for stage in stages(root):
        used |= {stage.out_dir.resolve(), stage.partial_dir.resolve()}
    if not workdir.is_dir():
        return []
    found = []
    for stage_root in sorted(p for p in workdir.iterdir() if p.is_dir()):
        found += [p for p in _entries(stage_root) if p.resolve() not in used]
    return found


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


def invalidate(root: luigi.Task, name: str, dry_run: bool = False) -> list[Path]:
    """Remove the outputs of stage `name` (family or key) and of everything downstream of it,
    so the next build recomputes them: stage folders, their partial folders (checkpoints
    included), and the file outputs of tasks without a key (e.g. PublishDataset's build.json).
    Returns what was (or, with dry_run, would be) removed."""
    removed: list[Path] = []
    for task in downstream(root, name):
        if isinstance(task, Stage):
            paths = [p for p in (task.out_dir, task.partial_dir) if p.exists()]
        else:
            paths = [Path(t.path) for t in flatten(task.output())
                     if isinstance(t, luigi.LocalTarget) and Path(t.path).is_file()]
        for path in paths:
            if not dry_run:
                if path.is_dir():
                    remove_folder(path)
                else:
                    path.unlink()
            removed.append(path)
    return removed


def verify_output(stage_dir: Path) -> list[str]:
    """Problems of a complete stage folder against its manifest: a listed file missing, with
    another size or sha256, or a file present but not listed (e.g. a temporary left over).
    An empty list means the folder is exactly what its stage published."""
    stage_dir = Path(stage_dir)
    if not cache.is_complete(stage_dir):
        return [f"{stage_dir}: no {cache.MANIFEST} (not a complete stage output)"]
    listed = {row["path"]: row for row in cache.read_manifest(stage_dir)["files"]}
    present = {p.relative_to(stage_dir).as_posix() for p in stage_dir.rglob("*")
               if p.is_file() and p.name != cache.MANIFEST}
    problems = [f"{stage_dir}: {p} is not in the manifest" for p in sorted(present - set(listed))]
    problems += [f"{stage_dir}: {p} is missing" for p in sorted(set(listed) - present)]
    for path in sorted(present & set(listed)):
        row, file = listed[path], stage_dir / path
        if file.stat().st_size != row["bytes"] or durable.sha256_file(file) != row["sha256"]:
            problems.append(f"{stage_dir}: {path} differs from the manifest (size or sha256)")
    return problems
