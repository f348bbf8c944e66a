"""The layout's rules (docs/ARCHITECTURE.md), read from the code with the standard library's ast:
what each room may import, no import cycle, short functions, and no torch at task import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "tasks", "models")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the three packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside a function: for `from a import
    b`, a.b when that is a module, else a."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = {f"{node.module}.{alias.name}" for alias in node.names}
            names |= (subs & MODULES.keys()) or {node.module}
    return names


GRAPH = {name: {d for d in _imports(path) if d in MODULES} for name, path in MODULES.items()}


# What each room of pipeline/ may import besides itself (docs/ARCHITECTURE.md): lower rooms only.
ROOM_IMPORTS = {
    "ops": set(),
    "store": set(),
    "image": {"store"},
    "quality": {"store", "image"},
    "train": {"ops", "store", "image", "quality"},
    "shards": {"store"},
    "report": {"store", "image", "quality", "train", "shards"},
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 2 else None


def test_each_room_imports_only_the_rooms_below_it():
    wrong = sorted(f"{name} -> {dep}" for name, deps in GRAPH.items() if _room(name)
                   for dep in deps if _room(dep) not in (None, _room(name))
                   and _room(dep) not in ROOM_IMPORTS[_room(name)])
    assert set(ROOM_IMPORTS) == {p.name for p in (ROOT / "pipeline").iterdir()
                                 if (p / "__init__.py").is_file()}
    assert not wrong


def test_nothing_under_pipeline_imports_luigi_or_tasks():
    offenders = {name: sorted(d for d in _imports(path) if d.split(".")[0] in ("luigi", "tasks"))
                 for name, path in MODULES.items() if name.startswith("pipeline")}
    assert not {k: v for k, v in offenders.items() if v}


def test_models_import_only_torch_and_other_models():
    for name, path in MODULES.items():
        if name.startswith("models"):
            project = {d.split(".")[0] for d in _imports(path)} & {"pipeline", "tasks"}
            assert not project, f"{name} imports {project}"


def _cycle() -> list[str] | None:
    """One import cycle among the project's modules (function-level imports included, so no
    import hidden in a function dodges one), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[name] = 2
        path.pop()
        return None

    for name in sorted(GRAPH):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_there_is_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "pipeline.store.cache", GRAPH["pipeline.store.cache"] |
                        {"pipeline.report.gather"})  # gather imports cache
    assert _cycle() is not None


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long


@pytest.mark.parametrize("entry", ["import tasks", "import tasks.cli"])
def test_importing_the_tasks_and_the_cli_loads_neither_torch_nor_pyiqa(entry):
    """What a fully cached build runs: every task module is imported, none runs a network."""
    probe = f"{entry}; import sys; print(sorted({{'torch', 'pyiqa'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
