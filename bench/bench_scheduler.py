"""Scheduler load: what luigi costs per task as the task count grows, with simulated tasks
that do no work, so what is timed is the scheduling alone (issue "data-parallel stages").

    python -m bench.bench_scheduler                       # local scheduler, about 2 minutes
    python -m bench.bench_scheduler --luigid --chunks 100,200,400

The DAG has the chunked build's shape: per chunk a chain of `--depth` stages (as IngestHR ->
EnhanceHR -> ... -> WriteShards per chunk), and one final stage needing every chain's last
stage (the set's manifest). Each task's `complete()` is an in-memory flag set by `run()`.
One worker. For every chunk count it reports the wall time of the whole build, the time before
the first task runs (the dependency scan and the scheduler's add_task calls), and the cost per
task as a ratio to the smallest count's: 1.0 means linear growth, more means each task gets
dearer as the graph grows.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import luigi

DONE: set[str] = set()
FIRST_RUN: list[float] = []


class Simulated(luigi.Task):
    """One stage of one chunk: needs the previous stage of the same chunk. `build` makes every
    build's tasks new to a luigid that remembers the previous build's."""

    build = luigi.IntParameter()
    chunk = luigi.IntParameter()
    stage = luigi.IntParameter()

    def requires(self):
        return Simulated(self.build, self.chunk, self.stage - 1) if self.stage > 0 else []

    def complete(self) -> bool:
        return self.task_id in DONE

    def run(self) -> None:
        if not FIRST_RUN:
            FIRST_RUN.append(time.perf_counter())
        DONE.add(self.task_id)


class Manifest(Simulated):
    """The final stage: needs every chunk's last stage."""

    chunks = luigi.IntParameter()

    def requires(self):
        return [Simulated(self.build, c, self.stage - 1) for c in range(self.chunks)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_luigid(folder: Path, resources: dict[str, int] | None = None
                 ) -> tuple[subprocess.Popen, int]:
    """A luigid on a free port with its state file in `folder` and these [resources]
    capacities; returns (process, port)."""
    port = free_port()
    cfg = folder / "luigid.cfg"
    cfg.write_text(f"[scheduler]\nstate_path = {folder / 'state.pickle'}\n"
                   "record_task_history = false\n[resources]\n"
                   + "".join(f"{k} = {v}\n" for k, v in (resources or {}).items()))
    luigid = Path(sys.executable).with_name("luigid")
    proc = subprocess.Popen([str(luigid), "--port", str(port), "--address", "127.0.0.1"],
                            env={"LUIGI_CONFIG_PATH": str(cfg)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("luigid did not start within 10 s")


def build_once(chunks: int, depth: int, port: int | None) -> tuple[float, float, int]:
    """(total seconds, seconds before the first task ran, tasks) of one fresh build."""
    DONE.clear()
    FIRST_RUN.clear()
    where = ({"scheduler_host": "127.0.0.1", "scheduler_port": port} if port
             else {"local_scheduler": True})
    started = time.perf_counter()
    ok = luigi.build([Manifest(build=chunks, chunk=-1, stage=depth, chunks=chunks)], workers=1,
                     log_level="ERROR", **where)
    total = time.perf_counter() - started
    tasks = chunks * depth + 1
    if not ok or len(DONE) != tasks:
        raise RuntimeError(f"{chunks} chunks: {len(DONE)} of {tasks} tasks ran")
    return total, FIRST_RUN[0] - started, tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default="100,200,400,800",
                        help="chunk counts to build, comma list (smallest first: the baseline)")
    parser.add_argument("--depth", type=int, default=8, help="stages per chunk")
    parser.add_argument("--luigid", action="store_true",
                        help="schedule on a luigid started for the run instead of in-process")
    args = parser.parse_args()
    counts = [int(c) for c in args.chunks.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        proc, port = start_luigid(Path(folder)) if args.luigid else (None, None)
        try:
            rows = [(c, *build_once(c, args.depth, port)) for c in counts]
        finally:
            if proc:
                proc.terminate()
                proc.wait()  # it writes its state file on the way out
    base = rows[0][1] / rows[0][3]
    print(f"scheduler: {'luigid' if args.luigid else 'local'}, {args.depth} stages per chunk")
    print("| chunks | tasks | build s | before first run s | ms per task | per-task ratio |")
    print("|---|---|---|---|---|---|")
    for chunks, total, first, tasks in rows:
        print(f"| {chunks} | {tasks} | {total:.1f} | {first:.1f} | {total / tasks * 1e3:.1f} "
              f"| {total / tasks / base:.2f} |")


if __name__ == "__main__":
    main()
