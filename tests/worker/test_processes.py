"""Real worker processes: graceful SIGTERM, SIGKILL and rescue, the supervisor, a crashing handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import wait_until
from tests.worker import procapp
from tests.worker.processes import client_of, worker_env


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(database_url, tmp_path, lease_seconds="1.5", rescue_interval="0.3")


@pytest.fixture
def client(database_url: str) -> Iterator[Conveyor]:
    app = client_of(procapp.app, database_url)
    yield app
    app.close()


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "tests.worker.procapp:app", "--concurrency", "4", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def runs(env: dict[str, str]) -> list[list[str]]:
    path = Path(env["RUN_LOG"])
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_lets_running_jobs_finish_and_releases_overrunning_ones(client: Conveyor, env: dict[str, str], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    short = client.enqueue("nap", {"seconds": 0.8})
    long = client.enqueue("nap", {"seconds": 60, "gate": str(gate)})
    worker = start_worker(env, "--shutdown-grace", "1.5")
    wait_until(lambda: client.admin.jobs.count(state="running") == 2, timeout=20)
    started = time.monotonic()
    code, out = stop(worker)
    assert code == 0, out
    assert time.monotonic() - started < 40  # did not wait for the long job (60 s): released it after the grace
    assert client.admin.jobs.get(short).state is JobState.COMPLETED  # finished within the grace period
    released = client.admin.jobs.get(long)
    assert released.state is JobState.PENDING and released.attempt == 0, out  # handed back, no attempt spent
    gate.touch()
    second = start_worker(env)
    wait_until(lambda: client.admin.jobs.get(long).state is JobState.COMPLETED, timeout=20)
    assert stop(second)[0] == 0
    assert client.admin.jobs.get(long).attempt == 1
    assert client.admin.workers.list() == []


def test_sigkill_mid_job_is_rescued_by_another_worker(client: Conveyor, env: dict[str, str], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job_id = client.enqueue("nap", {"seconds": 60, "gate": str(gate)})
    victim = start_worker(env)
    wait_until(lambda: client.admin.jobs.get(job_id).state is JobState.RUNNING, timeout=20)
    victim.kill()
    victim.communicate()
    gate.touch()
    rescuer = start_worker(env)
    wait_until(lambda: client.admin.jobs.get(job_id).state is JobState.COMPLETED, timeout=20)
    assert stop(rescuer)[0] == 0
    job = client.admin.jobs.get(job_id)
    assert job.attempt == 2
    assert "worker lost" in job.errors[0].error
    assert job.result == rescuer.pid


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_handler_that_kills_its_worker_ends_in_the_dlq(client: Conveyor, env: dict[str, str], processes: str) -> None:
    doomed = client.enqueue("crash", {})
    supervisor = start_worker(env, "--processes", processes)  # one process is supervised too
    wait_until(lambda: client.admin.jobs.get(doomed).state is JobState.DEAD, timeout=40)
    fine = client.enqueue("nap", {"seconds": 0})  # the restarted workers carry on
    wait_until(lambda: client.admin.jobs.get(fine).state is JobState.COMPLETED, timeout=20)
    code, out = stop(supervisor)
    assert code == 0, out
    job = client.admin.jobs.get(doomed)
    assert job.attempt == 2 and all("worker lost" in e.error for e in job.errors)
    assert sum(1 for r in runs(env) if r[0] == "start" and int(r[1]) == doomed) == 2


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def test_supervisor_restarts_a_dead_child_and_stops_all_on_sigterm(client: Conveyor, env: dict[str, str]) -> None:
    supervisor = start_worker(env, "--processes", "2")
    def two_children(without: int | None = None) -> set[int] | None:
        found = children(supervisor.pid)
        return found if len(found) == 2 and without not in found else None

    first = wait_until(two_children, timeout=20)
    wait_until(lambda: len(client.admin.workers.list()) == 2, timeout=20)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_until(lambda: two_children(without=victim), timeout=20)
    assert len(replaced & first) == 1
    job_id = client.enqueue("nap", {"seconds": 0})
    wait_until(lambda: client.admin.jobs.get(job_id).state is JobState.COMPLETED, timeout=20)
    code, out = stop(supervisor)
    assert code == 0, out
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_second_signal_stops_at_once(client: Conveyor, env: dict[str, str], tmp_path: Path) -> None:
    job_id = client.enqueue("nap", {"seconds": 60, "gate": str(tmp_path / "never")})
    worker = start_worker(env, "--shutdown-grace", "60")
    wait_until(lambda: client.admin.jobs.get(job_id).state is JobState.RUNNING, timeout=20)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    code, _ = stop(worker, signal.SIGINT, timeout=40)
    assert time.monotonic() - started < 40  # not the 60 s grace: at once
    assert code != 0
    assert client.admin.jobs.get(job_id).state is JobState.RUNNING  # its lease will expire and it will be rescued


@pytest.mark.parametrize("processes", [None, "1", "2"])
def test_a_worker_whose_threads_are_held_by_overrunning_handlers_is_replaced(
    client: Conveyor, env: dict[str, str], processes: str | None
) -> None:
    worker = start_worker(env, "--concurrency", "1", *(["--processes", processes] if processes else []))
    count = int(processes or 1)
    try:
        wait_until(lambda: len(client.admin.workers.list()) == count, timeout=20)
        before = {w.id for w in client.admin.workers.list()}
        stuck = client.enqueue("hang", {})
        wait_until(lambda: client.admin.jobs.get(stuck).state is JobState.DEAD, timeout=20)
        assert "timed out after 0.5 s" in client.admin.jobs.get(stuck).errors[-1].error
        after = client.enqueue("nap", {"seconds": 0})  # its worker's one thread is still held by the hang
        wait_until(lambda: client.admin.jobs.get(after).state is JobState.COMPLETED, timeout=30)
        replaced = lambda: (ids := {w.id for w in client.admin.workers.list()}) != before and len(ids) == count
        wait_until(replaced, timeout=20)  # a fresh worker in the place of the one whose thread is held
        assert worker.poll() is None  # still serving: replaced, not stopped
        if processes is None:
            assert client.admin.jobs.get(after).result == worker.pid  # a fresh image in the same process
    finally:
        code, out = stop(worker)
    assert code == 0, out
    assert "to be replaced by a fresh process" in out
    if processes is not None:
        assert "asked to be replaced; starting a fresh one" in out  # at once, not paced as a crash


def test_an_async_handler_that_swallows_cancellation_still_times_out(client: Conveyor, env: dict[str, str]) -> None:
    stubborn = client.enqueue("stubborn", {})
    worker = start_worker(env, "--concurrency", "8")  # one left-behind handler does not ask for a replacement
    try:
        wait_until(lambda: client.admin.jobs.get(stubborn).state is JobState.DEAD, timeout=30)
        assert client.admin.jobs.get(stubborn).errors[-1].error == "JobTimeout: timed out after 1 s"
        after = client.enqueue("nap", {"seconds": 0})  # the worker carries on
        wait_until(lambda: client.admin.jobs.get(after).state is JobState.COMPLETED, timeout=20)
    finally:
        code, out = stop(worker, timeout=60)
    assert code == 0, out
    assert f"job {stubborn} ignored its cancellation" in out
    assert client.admin.jobs.get(stubborn).state is JobState.DEAD  # no later write: its lease was given up


def test_shutdown_ends_within_the_grace_whatever_an_async_handler_does(client: Conveyor, env: dict[str, str]) -> None:
    stubborn = client.enqueue("stubborn", {}, timeout=3600)
    worker = start_worker(env, "--shutdown-grace", "2")
    wait_until(lambda: any(r[0] == "start" and int(r[1]) == stubborn for r in runs(env)), timeout=20)
    code, out = stop(worker, timeout=2 + 20)  # grace plus a bounded margin (generous for a loaded machine)
    assert code == 0, out
    released = client.admin.jobs.get(stubborn)
    assert released.state is JobState.PENDING and released.attempt == 0, out  # handed back unspent
    assert "left behind at exit" in out


def test_a_blocked_event_loop_costs_other_jobs_nothing_and_is_reported(client: Conveyor, env: dict[str, str], tmp_path: Path) -> None:
    rescuer = start_worker(env, "--queues", "nothing-here")  # rescues any lease that expires meanwhile
    wait_until(lambda: len(client.admin.workers.list()) == 1, timeout=20)
    gate = tmp_path / "gate"
    naps = [client.enqueue("nap", {"seconds": 60, "gate": str(gate)}) for _ in range(3)]
    worker = start_worker(env, "--concurrency", "4")
    wait_until(lambda: client.admin.jobs.count(state="running") == 3, timeout=20)
    blocker = client.enqueue("blocker", {"seconds": 5})  # 5 s without a turn of the loop: > 3 leases (1.5 s)
    wait_until(lambda: client.admin.jobs.get(blocker).state is JobState.COMPLETED, timeout=40)
    gate.touch()
    wait_until(lambda: all(client.admin.jobs.get(n).state is JobState.COMPLETED for n in naps), timeout=20)
    code, out = stop(worker)
    assert code == 0, out
    assert stop(rescuer)[0] == 0
    for n in naps:
        job = client.admin.jobs.get(n)
        assert job.attempt == 1 and not job.errors, out  # their leases held while the loop was blocked
        assert sum(1 for r in runs(env) if r[0] == "start" and int(r[1]) == n) == 1
    assert "event loop blocked for" in out and f"by job {blocker} (blocker)" in out, out
    assert "event loop ran again" in out
