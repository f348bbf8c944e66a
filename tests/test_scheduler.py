"""A real luigid on a free loopback port: builds by worker processes against it, its HTTP API,
its SQLite task history, and `gtforge scheduler start|status|stop`."""

import configparser
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import luigi
import luigi.configuration
import pytest

from pipeline.ops import scheduler
from pipeline.store import cache
from tasks import cli, stage_folders
from tasks.base import Stage
from tasks.config import gtforge
from tasks.ingest import IngestHR

REPO = Path(__file__).resolve().parents[1]
BRANCHES = 4


# ---------------------------------------------------------------- helpers (other tests use them)

def write_worker_config(path: Path, **sections: dict) -> Path:
    """The test's whole luigi configuration (build_env's settings included) as a file that a
    worker process reads through LUIGI_CONFIG_PATH, plus `sections` on top."""
    current = luigi.configuration.get_config()
    out = configparser.ConfigParser(interpolation=None)
    out.optionxform = str
    for section in current.sections():
        out[section] = dict(configparser.ConfigParser.items(current, section, raw=True))
    out["worker"] = {"wait_interval": "0.1", "wait_jitter": "0.1"}
    out["core"] = {**(dict(out["core"]) if out.has_section("core") else {}), "log_level": "INFO"}
    for section, values in sections.items():
        out[section] = {**(dict(out[section]) if out.has_section(section) else {}),
                        **{k: str(v) for k, v in values.items()}}
    with open(path, "w") as f:
        out.write(f)
    return path


def start_worker(config: Path, module: str, task: str, *args: str, log: Path) -> subprocess.Popen:
    """`python -m luigi --module <module> <task> <args>` in its own process group."""
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "PYTHONPATH": str(REPO)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "luigi", "--module", module, task, *args],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def runs_log() -> Path:
    return Path(gtforge().workdir).parent / "runs.log"


def record(event: str, stage: Stage) -> None:
    """One line per event (a single O_APPEND write) in a log shared by every worker process."""
    line = json.dumps({"event": event, "family": stage.get_task_family(), "key": stage.key,
                       "pid": os.getpid(), "time": time.time()}) + "\n"
    runs_log().parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(runs_log(), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)


def read_runs() -> list[dict]:
    if not runs_log().exists():
        return []
    return [json.loads(line) for line in runs_log().read_text().splitlines()]


def overlaps(runs: list[dict], families: set[str]) -> list[tuple]:
    """Pairs of runs of `families` whose [start, end] intervals intersect."""
    spans = {}
    for r in runs:
        if r["family"] in families:
            spans.setdefault(r["key"], {})[r["event"]] = r["time"]
    items = sorted((s["start"], s["end"]) for s in spans.values())
    return [(a, b) for a, b in zip(items, items[1:], strict=False) if b[0] < a[1]]


# ---------------------------------------------------------------- a tiny DAG for worker processes

class SchedBranch(Stage):
    """Reports progress to luigid; branches 0 and 1 hold the gpu resource."""

    branch = luigi.IntParameter()
    wait_for_go = luigi.BoolParameter(default=False, significant=False)

    @property
    def resources(self):
        return {"gpu": 1} if self.branch < 2 else {}

    def requires(self):
        return {"hr": IngestHR()}

    def build(self, out):
        record("start", self)
        go = Path(gtforge().workdir).parent / "go"
        deadline = time.monotonic() + 30
        while self.wait_for_go and not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in self.progress(range(5), 5, f"branch {self.branch}"):
            time.sleep(0.06)
            (out / f"part{i}.txt").write_text(f"{self.branch}:{i}")
        record("end", self)


class SchedSink(Stage):
    wait_for_go = luigi.BoolParameter(default=False, significant=False)

    def requires(self):
        return {f"b{i}": SchedBranch(branch=i, wait_for_go=self.wait_for_go)
                for i in range(BRANCHES)}

    def build(self, out):
        record("start", self)
        parts = sorted(p.read_text() for i in range(BRANCHES)
                       for p in self.input_dir(f"b{i}").glob("part*.txt"))
        (out / "all.txt").write_text("\n".join(parts))
        record("end", self)


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def luigid(tmp_path):
    server = scheduler.Luigid(tmp_path / "luigid", port=scheduler.free_port())
    scheduler.start(server, {"prune_on_get_work": "true", "stable_done_cooldown_secs": 10},
                    {"gpu": 1})
    yield server
    scheduler.stop(server)


def _wait(procs: list[subprocess.Popen], timeout: float, logs: list[Path]) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
        text = "\n".join(log.read_text(errors="replace")[-3000:] for log in logs)
        pytest.fail(f"workers did not finish in {timeout} s:\n{text}")


def _check_outputs(root: Stage) -> None:
    for folder in stage_folders.stage_folders(root):
        assert folder.state == "done", folder
        assert cache.verify_output(folder.path) == []
    lines = (root.out_dir / "all.txt").read_text().splitlines()
    assert lines == sorted(f"{b}:{i}" for b in range(BRANCHES) for i in range(5))


# ---------------------------------------------------------------- tests

def test_two_worker_processes_build_against_luigid(build_env, luigid, tmp_path):
    config = write_worker_config(tmp_path / "worker.cfg")
    log = tmp_path / "worker.log"
    proc = start_worker(config, "tests.test_scheduler", "SchedSink", "--scheduler-host",
                        "127.0.0.1", "--scheduler-port", str(luigid.port), "--workers", "2",
                        log=log)
    assert _wait([proc], 90, [log]) == [0], log.read_text()
    _check_outputs(SchedSink())

    done = scheduler.api(luigid, "task_list", status="DONE", upstream_status="", search="")
    families = sorted(t["name"] for t in done.values())
    assert families == sorted(["IngestHR", "SchedSink"] + ["SchedBranch"] * BRANCHES)
    for task in done.values():  # every stage reported progress through Stage.progress
        if task["name"] in ("IngestHR", "SchedBranch"):
            assert task["progress_percentage"] == 100, task
            assert task["status_message"].endswith(("4/4", "5/5")), task
    runs = read_runs()
    assert len([r for r in runs if r["event"] == "start"]) == BRANCHES + 1  # nothing twice
    assert overlaps(runs, {"SchedBranch"})  # the workers ran branches in parallel ...
    gpu_runs = [r for r in runs if r["family"] == "SchedBranch" and r["key"] in
                {SchedBranch(branch=0).key, SchedBranch(branch=1).key}]
    assert overlaps(gpu_runs, {"SchedBranch"}) == []  # ... but never two holding the gpu

    with sqlite3.connect(luigid.history_db) as db:  # task history, written by luigid
        events = db.execute("SELECT t.name, e.event_name FROM tasks t JOIN task_events e "
                            "ON e.task_id = t.id").fetchall()
    assert {(name, "DONE") for name in families} <= set(events)
    assert ("SchedSink", "RUNNING") in events


def test_two_independent_workers_share_one_workdir(build_env, luigid, tmp_path):
    """Two worker processes, as if on two hosts, each asked for the whole build."""
    config = write_worker_config(tmp_path / "worker.cfg")
    go = Path(gtforge().workdir).parent / "go"
    args = ("--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid.port),
            "--workers", "1", "--worker-keep-alive", "--no-lock", "--SchedSink-wait-for-go")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_worker(config, "tests.test_scheduler", "SchedSink", *args, log=log)
             for log in logs]
    deadline = time.monotonic() + 60
    while len(scheduler.api(luigid, "worker_list")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    go.touch()  # both are connected: let the branches finish
    # Each worker's exit code says what it saw: 10 (retcode already_running) when another
    # worker ran some of its tasks, 25 (not_run) when it stopped while the other still ran one.
    codes = _wait(procs, 90, logs)
    assert set(codes) <= {0, 10, 25}, [log.read_text()[-3000:] for log in logs]
    runs = read_runs()
    starts = [(r["family"], r["key"]) for r in runs if r["event"] == "start"]
    assert len(starts) == len(set(starts)) == BRANCHES + 1  # no task ran twice
    assert len({r["pid"] for r in runs}) == 2  # both processes did part of the work
    _check_outputs(SchedSink(wait_for_go=True))
    # The check a cron job makes (docs/SCALING.md): one more build exits 0 and runs nothing.
    check = start_worker(config, "tests.test_scheduler", "SchedSink", *args[:4], log=logs[0])
    assert _wait([check], 60, logs[:1]) == [0]
    assert len(read_runs()) == len(runs)
    ingest = [r for r in scheduler.api(luigid, "task_list", status="DONE", upstream_status="",
                                       search="IngestHR").values()]
    assert len(ingest) == 1


def test_gtforge_scheduler_start_status_stop(tmp_path, capsys):
    port = scheduler.free_port()
    where = ["--dir", str(tmp_path / "sched"), "--port", str(port)]
    assert cli.main(["scheduler", "status", *where]) == 3
    try:
        assert cli.main(["scheduler", "start", *where]) == 0
        assert cli.main(["scheduler", "start", *where]) == 1  # one per state folder
        assert "already running" in capsys.readouterr().err
        assert cli.main(["scheduler", "status", "--json", *where]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["running"] and info["responding"] and info["url"].endswith(f":{port}")
        assert info["url"].startswith("http://127.0.0.1:")  # loopback only by default
        assert scheduler.api(scheduler.Luigid(tmp_path / "sched", port=port), "resource_list")[0] \
            == {"name": "gpu", "num_total": 1, "num_used": 0, "num_consumer": 0, "running": {}}
        config = configparser.ConfigParser()
        config.read(tmp_path / "sched" / "luigid.cfg")
        assert config["scheduler"]["record_task_history"] == "true"
        assert config["scheduler"]["prune_on_get_work"] == "true"  # from luigi.cfg
        assert config["task_history"]["db_connection"].endswith("history.sqlite")
    finally:
        assert cli.main(["scheduler", "stop", *where]) == 0
    pid = info["pid"]
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert (tmp_path / "sched" / "state.pickle").is_file()  # saved on the clean shutdown
    assert (tmp_path / "sched" / "logs" / "luigi-server.log").stat().st_size > 0
    assert not (tmp_path / "sched" / "luigid.pid").exists()
    assert cli.main(["scheduler", "status", *where]) == 3
    assert cli.main(["scheduler", "stop", *where]) == 0
    assert "no luigid is running" in capsys.readouterr().out


def test_stale_pid_file_is_not_trusted(tmp_path):
    server = scheduler.Luigid(tmp_path, port=scheduler.free_port())
    dead = subprocess.Popen(["true"])
    dead.wait()
    server.pid_file.write_text(json.dumps({"pid": dead.pid, "address": server.address,
                                           "port": server.port}))
    assert scheduler.status(server)["running"] is False
    assert scheduler.stop(server) is False and not server.pid_file.exists()
