"""The DAG as data: every task reachable from a root by requires(), and the stage folders it uses.

Used by the cache tools (tasks/stage_folders.py), the Report and the shards' provenance. Nothing
here names a stage: everything is found by walking requires() from the root (BuildDataset
unless told otherwise), so new stages appear without changes here.
"""

from __future__ import annotations

import hashlib
import importlib

import luigi
from luigi.task import flatten
from luigi.task_register import Register

from pipeline.store import cache
from tasks.base import Stage


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
    """A task's family with its significant parameters that are set, except the chunk of
    photos, e.g. EnhanceHR(backbone=rcan, degradation=noise); the family alone when none are.
    The stages of every chunk share a label."""
    significant = {name for name, p in task.get_params() if p.significant} - {"chunk"}
    params = [f"{k}={v}" for k, v in task.param_kwargs.items()
              if v is not None and k in significant]
    return f"{task.get_task_family()}({', '.join(params)})" if params else task.get_task_family()


def stages(root: luigi.Task) -> list[Stage]:
    """The cached stages of the DAG (tasks with a key), inputs first."""
    return [t for t in walk(root) if isinstance(t, Stage)]


def provenance(root: luigi.Task) -> dict:
    """How the output of `root` is made: every stage of its DAG (inputs first) by its label
    (graph.label), with Stage.provenance(), and the installed versions of the packages that
    shape outputs. The chunks of a stage share one entry: its provenance without key, their
    number (`chunks`), their photos summed and the sha256 of their sorted keys
    (`keys_sha256`). JSON-ready."""
    found: dict[str, list[dict]] = {}
    for stage in stages(root):
        found.setdefault(label(stage), []).append(stage.provenance())
    return {"stages": {name: rows[0] if len(rows) == 1 else _chunks_entry(rows)
                       for name, rows in found.items()},
            "versions": cache.package_versions()}


def _chunks_entry(rows: list[dict]) -> dict:
    """One provenance entry for the chunks of a stage (rows: their Stage.provenance())."""
    keys = sorted(row["key"] for row in rows)
    shared = {k: v for k, v in rows[0].items() if k not in ("key", "photos")}
    return {**shared, "chunks": len(rows), "photos": sum(row["photos"] for row in rows),
            "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}


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
