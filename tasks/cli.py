"""The `gtforge` command: build, verify, inspect, export, sample (and the operations commands)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import luigi.configuration
from luigi.retcodes import run_with_retcodes

from pipeline.quality import results
from pipeline.shards.spec import ShardError, summary
from tasks.cli_args import BUILD_SETTINGS, LUIGID_SECTION, add_build_settings
from tasks.cli_ops import add_ops_commands
from tasks.config import gtforge
from tasks.evaluate import EvaluateTargets, MeasureTruth


def _run_luigi(root: str, args: argparse.Namespace, lock: bool = True) -> int:
    """Run task `root` through luigi's own entry point (so retcodes from luigi.cfg apply) with
    the build flags of `args`; returns the exit code. `lock` = False for a second run in the
    same process: luigi's pid lock would take this process's first run for another command
    line still running (exit 10, already_running)."""
    argv = ["--module", "tasks", root, "--workers", str(args.workers)]
    if not lock:
        argv.append("--no-lock")
    if args.local_scheduler:
        argv.append("--local-scheduler")
    elif args.scheduler_host:
        port = args.scheduler_port or luigi.configuration.get_config().get(LUIGID_SECTION, "port")
        argv += ["--scheduler-host", args.scheduler_host, "--scheduler-port", str(port)]
    for name in BUILD_SETTINGS:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--gtforge-{name.replace('_', '-')}", str(value)]
    extra = args.luigi_args[1:] if args.luigi_args[:1] == ["--"] else args.luigi_args
    try:
        run_with_retcodes(argv + extra)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def _build(args: argparse.Namespace) -> int:
    """Build the dataset (BuildDataset) and print where it is."""
    code = _run_luigi("BuildDataset", args)
    if code == 0:
        out = Path(args.out_dir or gtforge().out_dir)
        print(f"\nShards and manifest: {out.resolve()}")
        print(f"Report:              {(out / 'report' / 'index.html').resolve()}")
        _print_summary(out)
    return code


def _evaluate(args: argparse.Namespace) -> int:
    """Measure the build against clean references and train an SR network per target."""
    code = _run_luigi("EvaluateTargets", args) or _run_luigi("MeasureTruth", args, lock=False)
    if code == 0:
        folder = EvaluateTargets().out_dir
        evaluation = results.load_evaluation(folder)
        evaluation.pop("runs")  # every run's per-photo figures: in the file
        print(json.dumps({"truth": results.load_truth(MeasureTruth().out_dir)["overall"],
                          "evaluation": evaluation}, indent=1))
        print(f"Every run: {(folder / results.EVALUATION_JSON).resolve()}")
    return code


def _print_summary(out: Path) -> None:
    info = summary(out)
    print(json.dumps(info, indent=1))


def _verify(args: argparse.Namespace) -> int:
    from pipeline.shards.verify import verify  # h5py: only the commands that open shards

    try:
        verify(Path(args.out_dir))
    except ShardError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"OK: every shard in {args.out_dir} matches its manifest")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    _print_summary(Path(args.out_dir))
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipeline.shards.export import export_folder, export_lmdb

    export = export_folder if args.format == "folder" else export_lmdb
    print(export(Path(args.out_dir), Path(args.dest)))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from pipeline.image.sample import copy_sample_corpus  # skimage's data

    copies = copy_sample_corpus(Path(args.dest))
    print(f"{len(copies)} sample photographs in {Path(args.dest).resolve()}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gtforge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    for name, func, text in (
            ("build", _build, "build the dataset (BuildDataset) with luigi"),
            ("evaluate", _evaluate, "measure a build against clean references (--references) "
                                    "and train an SR network on each target")):
        b = sub.add_parser(name, help=text, epilog="Other arguments go to luigi, e.g. "
                                                   "--SelectPatches-crop-size 256.")
        where = b.add_mutually_exclusive_group()
        where.add_argument("--local-scheduler", action="store_true", help="no luigid")
        where.add_argument("--scheduler-host", help="luigid host (default from luigi.cfg)")
        b.add_argument("--scheduler-port", type=int, help="luigid port (default [luigid] port)")
        b.add_argument("--workers", type=int, default=1)
        add_build_settings(b)
        b.set_defaults(func=func, luigi_args=[])

    for name, func, text in (("verify", _verify, "check every shard against the manifest"),
                             ("inspect", _inspect, "print a summary of a shard set")):
        c = sub.add_parser(name, help=text)
        c.add_argument("out_dir")
        c.set_defaults(func=func)

    e = sub.add_parser("export", help="write the shards as an image folder or a BasicSR LMDB")
    e.add_argument("out_dir")
    e.add_argument("dest")
    e.add_argument("--format", choices=["folder", "lmdb"], default="folder")
    e.set_defaults(func=_export)

    s = sub.add_parser("sample", help="copy the sample photographs (from scikit-image)")
    s.add_argument("dest", nargs="?", default="data/sample")
    s.set_defaults(func=_sample)

    add_ops_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, unknown = p.parse_known_args(argv)
    if hasattr(args, "luigi_args"):  # build and evaluate: the rest is luigi's
        args.luigi_args = unknown
    elif unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
