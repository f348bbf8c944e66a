"""A luigid on this host: start it in the background, ask its HTTP API, stop it by its pid.

Everything luigid keeps lives in one folder (`Luigid.state_dir`):

    luigid.cfg      the configuration it was started with ([scheduler], [resources], [task_history])
    luigid.pid      JSON {pid, address, port, started}: written at start, removed at stop
    state.pickle    luigid's task state, saved on a clean shutdown (SIGTERM) and loaded at start
    history.sqlite  task history (every task's events: PENDING, RUNNING, DONE, FAILED, ...)
    logs/           luigi-server.log (luigid's log) and luigid.out (its stdout and stderr)

This module only launches the `luigid` program; it does not import luigi.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LAUNCH = "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])"


class SchedulerError(RuntimeError):
    """luigid could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class Luigid:
    """Where one luigid keeps its files and where it listens (loopback unless told otherwise)."""

    state_dir: Path
    port: int  # [luigid] port in luigi.cfg
    address: str = "127.0.0.1"

    @property
    def config_file(self) -> Path:
        return Path(self.state_dir) / "luigid.cfg"

    @property
    def pid_file(self) -> Path:
        return Path(self.state_dir) / "luigid.pid"

    @property
    def state_file(self) -> Path:
        return Path(self.state_dir) / "state.pickle"

    @property
    def history_db(self) -> Path:
        return Path(self.state_dir) / "history.sqlite"

    @property
    def log_dir(self) -> Path:
        return Path(self.state_dir) / "logs"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.address in ("", "0.0.0.0") else self.address
        return f"http://{host}:{self.port}"


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free on `address` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def write_config(server: Luigid, scheduler: Mapping[str, object] | None = None,
                 resources: Mapping[str, int] | None = None) -> Path:
    """Write luigid's configuration: the given [scheduler] settings and [resources] capacities,
    with the state file and SQLite task history in `server.state_dir`. Returns its path."""
    cfg = ConfigParser(interpolation=None)
    cfg.optionxform = str  # keep resource names as written
    cfg["scheduler"] = {k: str(v) for k, v in (scheduler or {}).items()}
    cfg["scheduler"]["state_path"] = str(Path(server.state_file).resolve())
    cfg["scheduler"]["record_task_history"] = "true"
    cfg["task_history"] = {"db_connection": f"sqlite:///{Path(server.history_db).resolve()}"}
    cfg["resources"] = {k: str(int(v)) for k, v in (resources or {}).items()}
    server.config_file.parent.mkdir(parents=True, exist_ok=True)
    with open(server.config_file, "w") as f:
        f.write("# Written by `gtforge scheduler start`; rewritten at every start.\n")
        cfg.write(f)
    return server.config_file


def read_pid(server: Luigid) -> dict[str, Any] | None:
    """The pid record of a luigid started from `server.state_dir`, or None."""
    try:
        return json.loads(server.pid_file.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True if process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # Linux: a zombie has exited but not been reaped yet
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def _is_luigid(pid: int) -> bool:
    """On Linux, check that `pid` runs luigid (a reused pid must never be signalled)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        return b"luigid" in cmdline.read_bytes()
    except OSError:
        return False


def api(server: Luigid, method: str, timeout: float = 5.0, **data: Any) -> Any:
    """Call luigid's HTTP API (`GET /api/<method>?data=<json>`) and return its "response"."""
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"{server.url}/api/{method}?{query}", timeout=timeout) as reply:
        return json.loads(reply.read())["response"]


def responding(server: Luigid) -> bool:
    """True if luigid answers its HTTP API."""
    try:
        api(server, "worker_list", timeout=2.0)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return False
    return True


def _log_tail(server: Luigid, lines: int = 15) -> str:
    text = []
    for name in ("luigid.out", "luigi-server.log"):
        path = server.log_dir / name
        if path.is_file():
            text += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text)


def start(server: Luigid, scheduler: Mapping[str, object] | None = None,
          resources: Mapping[str, int] | None = None, timeout: float = 30.0) -> int:
    """Start luigid in its own session (it outlives this process) and wait until it answers.

    Returns its pid. Raises SchedulerError if one is already running from this folder, or if
    it exits or does not answer within `timeout` seconds (the message quotes its log).
    """
    running = status(server)
    if running["running"]:
        raise SchedulerError(f"luigid is already running from {server.state_dir} "
                             f"(pid {running['pid']}, {running['url']})")
    server.pid_file.unlink(missing_ok=True)  # stale: its process is gone
    server.log_dir.mkdir(parents=True, exist_ok=True)
    write_config(server, scheduler, resources)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(server.config_file.resolve())}
    args = [sys.executable, "-c", _LAUNCH, "--address", server.address, "--port",
            str(server.port), "--logdir", str(server.log_dir.resolve()),
            "--state-path", str(server.state_file.resolve())]
    with open(server.log_dir / "luigid.out", "ab") as out:
        # cwd = state_dir, so that no luigi.cfg of the caller's directory changes luigid.
        proc = subprocess.Popen(args, cwd=server.state_dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    record = {"pid": proc.pid, "address": server.address, "port": server.port,
              "url": server.url, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    server.pid_file.write_text(json.dumps(record))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.pid_file.unlink(missing_ok=True)
            raise SchedulerError(f"luigid exited with status {proc.returncode} at start:\n"
                                 + _log_tail(server))
        if responding(server):
            return proc.pid
        time.sleep(0.1)
    stop(server)
    raise SchedulerError(f"luigid did not answer on {server.url} within {timeout:.0f} s:\n"
                         + _log_tail(server))


def status(server: Luigid) -> dict[str, Any]:
    """{running, responding, pid, url, state_dir, workers, tasks: {status: count}}."""
    record = read_pid(server) or {}
    pid = record.get("pid")
    if record:  # the address it was started with, not the caller's default
        server = Luigid(server.state_dir, int(record["port"]), record["address"])
    running = bool(pid) and _alive(pid) and _is_luigid(pid)
    info: dict[str, Any] = {"running": running, "responding": False,
                            "pid": pid if running else None, "url": server.url,
                            "state_dir": str(server.state_dir), "started": record.get("started")}
    if running:
        try:
            workers = len(api(server, "worker_list"))
            counts: dict[str, int] = {}
            for state in ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED"):
                tasks = api(server, "task_list", status=state, upstream_status="", search="")
                # Past max_shown_tasks luigid answers only {"num_tasks": n}.
                counts[state] = int(tasks["num_tasks"]) if "num_tasks" in tasks else len(tasks)
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return info
        info.update(responding=True, workers=workers, tasks=counts)
    return info


def stop(server: Luigid, timeout: float = 20.0) -> bool:
    """Stop the luigid started from `server.state_dir`: SIGTERM (it saves its state file and
    exits), SIGKILL if it is still there after `timeout` seconds. Returns False if none ran."""
    record = read_pid(server)
    if not record:
        return False
    pid = int(record["pid"])
    if not (_alive(pid) and _is_luigid(pid)):
        server.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid):
            _reap(pid)
            if time.monotonic() > deadline:
                raise SchedulerError(f"luigid (pid {pid}) is still there after SIGKILL")
            time.sleep(0.05)
    _reap(pid)
    server.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if luigid is our own child (started in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
