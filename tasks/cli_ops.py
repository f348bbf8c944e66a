"""`gtforge scheduler start|stop|status` and `gtforge cache list|invalidate|gc|verify`.

`tasks/cli.py` calls `add_ops_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import luigi.configuration
from luigi.task_register import Register

from pipeline.ops.scheduler import Luigid, SchedulerError, start, status, stop
from pipeline.store import cache
from pipeline.store.cache import human_size
from tasks import graph, stage_folders
from tasks.cli_args import BUILD_SETTINGS, LUIGID_SECTION, add_build_settings
from tasks.publish import BuildDataset

# ---------------------------------------------------------------- scheduler

def _server(args: argparse.Namespace):
    cfg = luigi.configuration.get_config()
    return Luigid(Path(args.dir or cfg.get(LUIGID_SECTION, "state_dir")),
                  int(args.port or cfg.get(LUIGID_SECTION, "port")),
                  args.address or cfg.get(LUIGID_SECTION, "address"))


def _scheduler_start(args: argparse.Namespace) -> int:
    cfg, server = luigi.configuration.get_config(), _server(args)
    scheduler = dict(cfg.items("scheduler")) if cfg.has_section("scheduler") else {}
    resources = {k: int(v) for k, v in cfg.items("resources")} if cfg.has_section("resources") \
        else {}
    try:
        pid = start(server, scheduler, resources)
    except SchedulerError as e:
        print(f"gtforge scheduler start: {e}", file=sys.stderr)
        return 1
    print(f"luigid running: pid {pid}, {server.url} (state, logs and task history in "
          f"{Path(server.state_dir).resolve()})")
    host = server.url.split("//")[1].rsplit(":", 1)[0]
    print(f"build against it: gtforge build --scheduler-host {host} --scheduler-port {server.port}")
    return 0


def _scheduler_stop(args: argparse.Namespace) -> int:
    server = _server(args)
    if stop(server):
        print(f"luigid stopped; its state is saved in {server.state_file}")
    else:
        print(f"no luigid is running from {server.state_dir}")
    return 0


def _scheduler_status(args: argparse.Namespace) -> int:
    info = status(_server(args))
    if args.json:
        print(json.dumps(info, indent=1))
    elif not info["running"]:
        print(f"luigid is not running (state folder {info['state_dir']})")
    else:
        tasks = ", ".join(f"{k.lower()} {v}" for k, v in info.get("tasks", {}).items())
        print(f"luigid pid {info['pid']} at {info['url']}, started {info['started']}; "
              + (f"{info['workers']} workers; tasks: {tasks}" if info["responding"]
                 else "NOT answering its HTTP API"))
    return 0 if info["running"] else 3


# ---------------------------------------------------------------- cache

def _root(args: argparse.Namespace):
    """The DAG root for the cache commands, after applying the [gtforge] flags."""
    cfg = luigi.configuration.get_config()
    for name in BUILD_SETTINGS:
        value = getattr(args, name, None)
        if value is not None:
            cfg.set("gtforge", name, str(value))
    Register.clear_instance_cache()
    if args.root:
        return graph.task_by_name(args.root, args.module)
    return BuildDataset()


def _cache_list(args: argparse.Namespace) -> int:
    root = _root(args)
    rows = stage_folders.stage_folders(root)
    extra = stage_folders.unreferenced(root)
    extra_bytes = sum(cache.folder_bytes(p) for p in extra)
    if args.json:
        print(json.dumps({"stages": [{**r.__dict__, "path": str(r.path)} for r in rows],
                          "unreferenced": [str(p) for p in extra],
                          "unreferenced_bytes": extra_bytes}, indent=1))
        return 0
    width = max([len(r.name) for r in rows] + [5])
    print(f"{'stage':<{width}}  {'key':<16}  {'state':<7}  {'size':>9}  path")
    for r in rows:
        print(f"{r.name:<{width}}  {r.key}  {r.state:<7}  {human_size(r.bytes):>9}  {r.path}")
    done = [r for r in rows if r.state == "done"]
    in_use = human_size(sum(r.bytes for r in rows))
    print(f"\n{len(rows)} stages, {len(done)} done, {in_use} in use; "
          f"{len(extra)} unreferenced folders, {human_size(extra_bytes)} (`gtforge cache gc`)")
    return 0


def _cache_invalidate(args: argparse.Namespace) -> int:
    root = _root(args)
    removed = stage_folders.invalidate(root, args.stage, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    affected = {t.get_task_family() for t in graph.downstream(root, args.stage)}
    print(f"{len(removed)} paths {verb}; the next build reruns: {', '.join(sorted(affected))}")
    return 0


def _cache_gc(args: argparse.Namespace) -> int:
    root = _root(args)
    found = stage_folders.unreferenced(root)
    sizes = {p: cache.folder_bytes(p) for p in found}
    for path in found:
        print(f"{'delete' if args.yes else 'would delete'} {path}  ({human_size(sizes[path])})")
        if args.yes:
            cache.remove_folder(path)
    total = human_size(sum(sizes.values()))
    if args.yes:
        print(f"deleted {len(found)} folders, {total}")
    else:
        print(f"{len(found)} folders, {total} not used by the current configuration; "
              "nothing deleted (dry run): run `gtforge cache gc --yes` to delete them")
    return 0


def _cache_verify(args: argparse.Namespace) -> int:

    rows = [r for r in stage_folders.stage_folders(_root(args)) if r.state == "done"]
    problems = [p for r in rows for p in cache.verify_output(r.path)]
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(rows)} stage outputs checked: "
          + ("all match their manifests" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


def _guarded(func):
    """Configuration problems (an unknown stage, a setting missing from luigi.cfg, a missing
    input folder) end the command with their message and exit code 2, not a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (LookupError, FileNotFoundError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"gtforge cache {args.action}: {message}", file=sys.stderr)
            return 2
    return run


def _add_dag_options(p: argparse.ArgumentParser) -> None:
    add_build_settings(p)
    p.add_argument("--root", help="task family at the root of the DAG (default BuildDataset)")
    p.add_argument("--module", default="tasks", help="module that defines --root (default tasks)")


def add_ops_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `scheduler` and `cache` on the `gtforge` command's subparsers."""
    s = subparsers.add_parser("scheduler", help="start, stop or query a luigid on this host")
    ssub = s.add_subparsers(dest="action", required=True)
    for name, func, text in (("start", _scheduler_start, "start luigid in the background"),
                             ("stop", _scheduler_stop, "stop it (it saves its state first)"),
                             ("status", _scheduler_status, "is it running; workers; tasks")):
        c = ssub.add_parser(name, help=text)
        c.add_argument("--dir", help="state folder (default [luigid] state_dir)")
        c.add_argument("--address", help="listen address (default [luigid] address, loopback)")
        c.add_argument("--port", type=int, help="port (default [luigid] port)")
        if name == "status":
            c.add_argument("--json", action="store_true")
        c.set_defaults(func=func)

    c = subparsers.add_parser("cache", help="list, invalidate, garbage-collect or verify stage "
                                            "outputs of the current configuration")
    csub = c.add_subparsers(dest="action", required=True)
    p = csub.add_parser("list", help="every stage key and folder the configuration uses, "
                                     "with sizes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cache_list)
    p = csub.add_parser("invalidate", help="remove a stage's outputs and everything downstream")
    p.add_argument("stage", help="stage name (task family, e.g. SelectPatches) or a key")
    p.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    p.set_defaults(func=_cache_invalidate)
    p = csub.add_parser("gc", help="delete key folders the configuration no longer uses "
                                   "(dry run unless --yes)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", default=True,
                      help="print what would be deleted (the default)")
    mode.add_argument("--yes", action="store_true", help="delete them")
    p.set_defaults(func=_cache_gc)
    p = csub.add_parser("verify", help="re-hash every complete stage output against its manifest")
    p.set_defaults(func=_cache_verify)
    for p in csub.choices.values():
        _add_dag_options(p)
        p.set_defaults(func=_guarded(p.get_default("func")))
