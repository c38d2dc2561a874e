"""deploy/: the systemd unit's commands run as written, stopped as systemd stops them; JSON log lines as a real worker writes them; ``conveyor health`` exit codes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import wait_until
from tests.worker.procapp import app as procapp
from tests.worker.processes import client_of, worker_env

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "conveyor-worker.service"


def unit() -> dict[str, list[str]]:
    """The unit file's keys, each with every value it is given (systemd allows repeats)."""
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def command(line: str) -> list[str]:
    """A unit command made runnable here: our interpreter for the venv's conveyor, the test app for the shop's."""
    words = shlex.split(line)
    assert words[0] == "/srv/shop/.venv/bin/conveyor"
    return [sys.executable, "-m", "conveyor", *("tests.worker.procapp:app" if w == "shop.jobs:app" else w for w in words[1:])]


@pytest.fixture
def client(database_url: str) -> Iterator[Conveyor]:
    app = client_of(procapp, database_url)
    yield app
    app.close()


def test_the_units_commands_migrate_run_and_stop_gracefully_logging_json(client: Conveyor, database_url: str, tmp_path: Path) -> None:
    keys = unit()
    assert keys["KillSignal"] == ["SIGTERM"] and keys["KillMode"] == ["mixed"] and keys["Type"] == ["exec"]
    grace = float(shlex.split(keys["ExecStart"][0])[shlex.split(keys["ExecStart"][0]).index("--shutdown-grace") + 1])
    assert float(keys["TimeoutStopSec"][0]) > grace  # systemd's SIGKILL never cuts the grace period short
    unit_env = dict(v.split("=", 1) for v in keys["Environment"])
    env = {**worker_env(database_url, tmp_path), "CONVEYOR_LOG_FORMAT": unit_env["CONVEYOR_LOG_FORMAT"]}

    pre = subprocess.run(check=False, args=command(keys["ExecStartPre"][0]), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert pre.returncode == 0, pre.stderr
    quick = client.enqueue("nap", {"seconds": 0})
    slow = client.enqueue("nap", {"seconds": 2.0})
    worker = subprocess.Popen(command(keys["ExecStart"][0]) + ["--poll-interval", "0.05"], env=env, cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: client.admin.jobs.get(slow).state is JobState.RUNNING and client.admin.jobs.get(quick).finished, timeout=60)
        worker.send_signal(getattr(signal, keys["KillSignal"][0]))
        _, stderr = worker.communicate(timeout=float(keys["TimeoutStopSec"][0]))
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert client.admin.jobs.get(slow).state is JobState.COMPLETED  # the grace let it finish
    runs = {line["job_id"]: line for line in lines if "outcome" in line}
    assert runs[quick]["job_type"] == "nap" and runs[quick]["queue"] == "default" and runs[quick]["attempt"] == 1
    assert runs[quick]["outcome"] == "completed" and runs[slow]["outcome"] == "completed"
    assert {"time", "level", "logger", "message", "duration_ms"} <= set(runs[quick])
    assert any("started" in line["message"] for line in lines)


def run_health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(check=False, args=[sys.executable, "-m", "conveyor", "health", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_health_exit_codes_for_probes(client: Conveyor, database_url: str, tmp_path: Path) -> None:
    env = worker_env(database_url, tmp_path)
    client.enqueue("nap", {"seconds": 0})
    degraded = run_health(env)
    assert degraded.returncode == 1 and degraded.stdout.startswith("degraded") and "FAIL" in degraded.stdout  # a due job, no worker
    assert run_health(env, "--local").returncode == 1
    worker = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", "tests.worker.procapp:app", "--poll-interval", "0.05"],
                              env=env, cwd=ROOT)
    try:
        wait_until(lambda: client.admin.workers.list(), timeout=60, message="the worker to register")
        ok = run_health(env)
        assert ok.returncode == 0 and ok.stdout.startswith("ok"), ok.stdout
        local = run_health(env, "--local")
        assert local.returncode == 0 and f"workers on {socket.gethostname()}: 1 live" in local.stdout
        assert run_health(env, "--worker", client.admin.workers.list()[0].id).returncode == 0
        assert run_health(env, "--worker", "no-such-worker").returncode == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    unreachable = run_health({**env, "CONVEYOR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "CONVEYOR_DB_TIMEOUT": "2"})
    assert unreachable.returncode == 2 and "database unreachable" in unreachable.stderr


def test_log_format_is_checked(tmp_path: Path) -> None:
    out = subprocess.run(check=False, args=[sys.executable, "-m", "conveyor", "--log-format", "xml", "health"], capture_output=True, text=True,
                         env={**os.environ, "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}, timeout=60)
    assert out.returncode == 2 and "'xml' is not one of 'text', 'json'" in out.stderr
