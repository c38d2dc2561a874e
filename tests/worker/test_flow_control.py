"""Flow control with real workers: cron exactly once, rate and concurrency limits across
processes, batch handlers, Retry-After, priority aging, delayed jobs — both backends."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor import Conveyor, JobContext, JobState
from conveyor.batch import BatchContext, BatchError
from conveyor.ratelimit import Throttled
from conveyor.testing import running_worker, wait_until
from tests.worker import flowapp
from tests.worker.processes import client_of, worker_env

# -- real processes ---------------------------------------------------------------------


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(database_url, tmp_path, lease_seconds="5")


@pytest.fixture
def client(database_url: str) -> Iterator[Conveyor]:
    app = client_of(flowapp.app, database_url)
    yield app
    app.close()


def start_workers(env: dict[str, str], count: int, concurrency: int = 10) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "tests.worker.flowapp:app", "--concurrency", str(concurrency)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out


def runs(env: dict[str, str]) -> list[tuple[str, int, int, float]]:
    path = Path(env["RUN_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [(e, int(j), int(p), float(t)) for e, j, p, t in (line.split() for line in lines)]


def test_a_schedule_firing_every_second_runs_exactly_once_per_second_across_four_workers(
    client: Conveyor, env: dict[str, str]
) -> None:
    procs = start_workers({**env, "FLOW_CRON": "1"}, 4, concurrency=2)
    try:
        wait_until(lambda: len(client.admin.workers.list()) == 4, timeout=30, message="four workers")
        window_start = client.now().replace(microsecond=0) + timedelta(seconds=1)
        window_end = window_start + timedelta(seconds=10)
        wait_until(lambda: client.now() > window_end + timedelta(seconds=1.5), timeout=30, interval=0.2)
    finally:
        stop_all(procs)
    jobs = client.admin.jobs.list(type="tick", limit=1000)
    fire_times = sorted(int(j.unique_key.rsplit(":", 1)[1]) for j in jobs if j.unique_key)
    assert len(fire_times) == len(jobs) == len(set(fire_times))  # no fire enqueued twice
    assert fire_times == list(range(fire_times[0], fire_times[-1] + 1))  # and none missed
    in_window = [t for t in fire_times if window_start.timestamp() <= t < window_end.timestamp()]
    assert len(in_window) == 10
    started = [r[1] for r in runs(env) if r[0] == "start"]
    assert sorted(started) == sorted(j.id for j in jobs if j.state is JobState.COMPLETED)  # each ran once


def test_a_rate_limit_holds_across_three_worker_processes(client: Conveyor, env: dict[str, str]) -> None:
    ids = client.enqueue_many([("limited", {}) for _ in range(200)])
    procs = start_workers(env, 3, concurrency=10)
    try:
        wait_until(lambda: client.admin.jobs.count(type="limited", state="completed") == 200, timeout=60, interval=0.2)
    finally:
        stop_all(procs)
    jobs = [client.admin.jobs.get(i) for i in ids]
    starts = sorted(j.attempted_at.timestamp() for j in jobs if j.attempted_at)
    busiest = max(sum(1 for t in starts[i:] if t < start + 1.0) for i, start in enumerate(starts))
    span = starts[-1] - starts[0]
    print(f"rate 20/s, 3 processes, 200 jobs: busiest 1-second window {busiest} starts, first to last start {span:.2f} s")
    assert busiest <= 20
    assert span > 8.5  # ten windows' worth: the limit held
    assert span < 30  # and the limited jobs were not starved (bound loose: a loaded machine is slow, the limiter is not)
    assert all(j.attempt == 1 for j in jobs)  # waiting over the limit spent no attempt
    assert len({r[2] for r in runs(env)}) == 3


def test_a_concurrency_limit_holds_across_three_worker_processes(client: Conveyor, env: dict[str, str]) -> None:
    client.enqueue_many([("exclusive", {"seconds": 0.3}) for _ in range(10)])
    procs = start_workers(env, 3, concurrency=4)
    try:
        wait_until(lambda: client.admin.jobs.count(type="exclusive", state="completed") == 10, timeout=60, interval=0.1)
    finally:
        stop_all(procs)
    events = sorted((t, 1 if e == "start" else -1) for e, _, _, t in runs(env))
    running, peak = 0, 0
    for _, step in sorted(events, key=lambda x: (x[0], x[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    assert peak == 2


# -- in-process workers -----------------------------------------------------------------


class Email(BaseModel):
    to: str


def test_a_batch_handler_gets_lists_and_only_failed_items_retry(app: Conveyor) -> None:
    calls: list[list[str]] = []

    @app.job(batch=5, max_attempts=2, backoff=0.05)
    def send(emails: list[Email], ctx: BatchContext) -> list[object]:
        assert all(isinstance(e, Email) for e in emails) and len(ctx.jobs) == len(emails)
        calls.append([e.to for e in emails])
        for item, e in zip(ctx.items, emails):
            item.enqueue("log_delivery", {"to": e.to})  # stored only if that item completes
        bad = {i: "bounced" for i, e in enumerate(emails) if e.to.startswith("bad")}
        if bad:
            raise BatchError(bad, results=[f"sent to {e.to}" for e in emails])
        return [f"sent to {e.to}" for e in emails]

    @app.job()
    def log_delivery(p: dict) -> None:  # type: ignore[type-arg]
        return None

    ids = app.enqueue_many([("send", {"to": to}) for to in ("a@x", "bad@x", "b@x", "c@x", "d@x", "e@x")])
    with pytest.raises(Exception, match="to"):
        app.enqueue("send", {"nope": 1})  # each payload is still validated at enqueue
    with running_worker(app, concurrency=2):
        wait_until(lambda: app.admin.jobs.get(ids[1]).state is JobState.DEAD)
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.COMPLETED for i in ids if i != ids[1]))
    assert calls[0] == ["a@x", "bad@x", "b@x", "c@x", "d@x"]  # one call for five due jobs
    assert sum(len(c) for c in calls) == 7  # six items, and the bounced one once more
    good = app.admin.jobs.get(ids[0])
    assert (good.attempt, good.result) == (1, "sent to a@x")
    dead = app.admin.jobs.get(ids[1])
    assert dead.attempt == 2 and [e.error for e in dead.errors] == ["ItemFailed: bounced"] * 2
    children = app.admin.jobs.list(type="log_delivery")
    assert sorted(j.payload["to"] for j in children) == ["a@x", "b@x", "c@x", "d@x", "e@x"]  # none for the bounced one
    assert {j.parent_id for j in children} == set(ids) - {ids[1]}


def test_a_batch_handler_that_raises_fails_every_item(app: Conveyor) -> None:
    @app.job(batch=3, max_attempts=1)
    async def flaky(items: list[dict], ctx: BatchContext) -> None:  # type: ignore[type-arg]
        raise ConnectionError("provider down")

    ids = app.enqueue_many([("flaky", {"n": i}) for i in range(3)])
    with running_worker(app, concurrency=1):
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.DEAD for i in ids))
    assert {app.admin.jobs.get(i).errors[0].error for i in ids} == {"ConnectionError: provider down"}


def test_retry_after_reschedules_without_spending_an_attempt(app: Conveyor) -> None:
    seen: list[float] = []

    @app.job(max_attempts=1)
    def call_api(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise Throttled("0.4")  # the remote answered 429 with Retry-After
        return "ok"

    job_id = app.enqueue("call_api", {})
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(job_id).state is JobState.COMPLETED)
    job = app.admin.jobs.get(job_id)
    assert (job.attempt, job.result) == (1, "ok")  # max_attempts=1, yet it ran twice
    assert seen[1] - seen[0] >= 0.35


@pytest.mark.parametrize("aging", [None, 0.5])
def test_aging_lets_a_low_priority_job_through_a_flood_of_urgent_ones(app: Conveyor, aging: float | None) -> None:
    @app.job()
    async def work(p: dict) -> None:  # type: ignore[type-arg]
        import asyncio

        await asyncio.sleep(0.01)

    if aging is not None:
        app.queue_limit("default", aging=aging)
    flooding = threading.Event()
    flooding.set()

    def flood() -> None:
        while flooding.is_set():
            if app.admin.jobs.count(state="pending", type="work") < 40:
                app.enqueue_many([("work", {"urgent": True}, {"priority": 20}) for _ in range(20)])
            time.sleep(0.02)

    feeder = threading.Thread(target=flood)
    app.enqueue_many([("work", {"urgent": True}, {"priority": 20}) for _ in range(40)])
    feeder.start()
    try:
        with running_worker(app, concurrency=2):
            low = app.enqueue("work", {"urgent": False}, priority=-10)
            enqueued = app.admin.jobs.get(low).run_at
            if aging is None:
                time.sleep(3.0)  # strict priority: it waits for as long as urgent work keeps coming
                assert app.admin.jobs.get(low).state is JobState.PENDING
            else:
                wait_until(lambda: app.admin.jobs.get(low).state is JobState.COMPLETED, timeout=30)
                waited = (app.admin.jobs.get(low).attempted_at - enqueued).total_seconds()  # type: ignore[operator]
                print(f"aging {aging} s under a flood: the low-priority job started after {waited:.2f} s")
                assert aging <= waited  # not before its aging bound
                assert app.admin.jobs.count(state="pending", type="work") > 0  # and while the flood was still on (strict priority: never)
    finally:
        flooding.clear()
        feeder.join()


def test_delayed_jobs_run_on_time_and_survive_restarts(app: Conveyor) -> None:
    @app.job()
    def later(p: dict) -> None:  # type: ignore[type-arg]
        return None

    soon = app.enqueue("later", {}, delay=0.8)
    tomorrow = app.enqueue("later", {}, delay=timedelta(hours=24))
    run_at = app.admin.jobs.get(tomorrow).run_at
    with running_worker(app, poll_interval=0.1):
        wait_until(lambda: app.admin.jobs.get(soon).state is JobState.COMPLETED)
    job = app.admin.jobs.get(soon)
    late = (job.attempted_at - job.run_at).total_seconds()  # type: ignore[operator]
    assert 0 <= late  # never early
    assert late < 5  # and not left for a later sweep (loose: a loaded machine claims late, the schedule does not)
    with running_worker(app, poll_interval=0.1):
        time.sleep(0.3)
    kept = app.admin.jobs.get(tomorrow)
    assert kept.state is JobState.SCHEDULED and kept.run_at == run_at and kept.attempt == 0


def test_a_worker_fires_its_apps_schedules(app: Conveyor) -> None:
    @app.job()
    def beat(p: dict) -> None:  # type: ignore[type-arg]
        return None

    app.cron("* * * * * *", "beat")
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(type="beat", state="completed") >= 2, timeout=5)
        listed = app.admin.schedules.list()
    assert [s.name for s in listed] == ["beat"] and listed[0].last_job_id is not None
    assert listed[0].next_fire_at > listed[0].last_fire_at  # type: ignore[operator]


def test_a_worker_does_not_spin_when_only_limited_jobs_are_due(app: Conveyor) -> None:
    @app.job(rate_limit="2/m")
    def scarce(p: dict) -> None:  # type: ignore[type-arg]
        return None

    ids = app.enqueue_many([("scarce", {"n": i}) for i in range(20)])
    claims = 0
    claim = app.backend.jobs_claim_rows

    def counted(params: object) -> object:  # counts the worker's trips to the database, changes nothing
        nonlocal claims
        claims += 1
        return claim(params)  # type: ignore[arg-type]

    app.backend.jobs_claim_rows = counted  # type: ignore[method-assign]
    with running_worker(app, poll_interval=0.25, concurrency=4):
        wait_until(lambda: app.admin.jobs.count(type="scarce", state="completed") == 2)
        before = claims
        time.sleep(1.0)
        during = claims - before
    assert during <= 6  # one claim per poll interval, not a hot loop
    waiting = [app.admin.jobs.get(i) for i in ids[2:]]
    assert all(j.state is JobState.PENDING and j.attempt == 0 and not j.errors for j in waiting)
