"""The app that bench/faults.py's worker processes run: recorded jobs, hostile handlers, a skewed clock.

Every run of ``record`` and ``tick`` writes its start and end (true wall-clock time) to
``faults_runs``, the evidence for lost and overlapping runs. The hostile handlers each break
a worker in one way. ``FAULTS_CLOCK_SKEW=<seconds>`` shifts this process's Python clock
(``time.time`` and ``datetime.now``) to play a worker machine whose clock is wrong;
``FAULTS_CRON=1`` adds a schedule firing every second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import sys
import threading
import time
import uuid
from typing import Any

TRUE_TIME = time.time  # the evidence is written in true time, whatever this process believes
SKEW = float(os.environ.get("FAULTS_CLOCK_SKEW", "0") or 0)


class SkewedDatetime(dt.datetime):
    """``datetime`` whose ``now()`` is off by SKEW seconds, like a machine with a wrong clock."""

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> SkewedDatetime:
        return super().now(tz) + dt.timedelta(seconds=SKEW)  # type: ignore[return-value]

    @classmethod
    def utcnow(cls) -> SkewedDatetime:
        return cls.now(dt.UTC).replace(tzinfo=None)


def skew_clock() -> None:
    """Shift time.time and every ``datetime`` name already imported by Conveyor and its libraries."""
    time.time = lambda: TRUE_TIME() + SKEW
    dt.datetime = SkewedDatetime  # type: ignore[misc]
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("conveyor", "cronsim", "bench") and getattr(module, "datetime", None) is SkewedDatetime.__base__:
            module.datetime = SkewedDatetime  # type: ignore[attr-defined]


from conveyor import Conveyor, JobContext

if SKEW:
    skew_clock()

app = Conveyor()  # CONVEYOR_DATABASE_URL from the environment
URL = app.settings.database_url
local = threading.local()

CREATE = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS faults_runs (id TEXT PRIMARY KEY, job_id INTEGER, pid INTEGER, started REAL, ended REAL, clock REAL)",
        "CREATE TABLE IF NOT EXISTS faults_deaths (pid INTEGER, at REAL)",
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS faults_runs (id TEXT PRIMARY KEY, job_id BIGINT, pid INTEGER, started DOUBLE PRECISION, ended DOUBLE PRECISION, clock DOUBLE PRECISION)",
        "CREATE TABLE IF NOT EXISTS faults_deaths (pid INTEGER, at DOUBLE PRECISION)",
    ],
}


def connection() -> Any:
    """This thread's connection for the evidence, kept apart from the queue's own."""
    conn = getattr(local, "conn", None)
    if conn is None:
        if URL.startswith("sqlite"):
            conn = sqlite3.connect(URL.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
        else:
            import psycopg

            conn = psycopg.connect(URL, autocommit=True, connect_timeout=5)
        local.conn = conn
    return conn


def write(sql: str, args: tuple[Any, ...]) -> Any:
    """One evidence statement; through a database outage it waits and tries again, so no run goes unrecorded."""
    for attempt in range(600):
        try:
            conn = connection()
            text = sql if isinstance(conn, sqlite3.Connection) else sql.replace("?", "%s")
            cur = conn.execute(text, args)
            return cur.fetchone() if cur.description else None
        except Exception:
            if isinstance(getattr(local, "conn", None), sqlite3.Connection) or attempt == 599:
                raise
            local.conn = None  # PostgreSQL went away: reconnect
            time.sleep(0.1)
    return None


def started(job_id: int) -> str:
    """Record a run's start. Its id is made here, so a retried insert (the reply lost in an outage)
    cannot record one run twice."""
    run_id = uuid.uuid4().hex
    # clock: what this process believes the time is (differs from started under FAULTS_CLOCK_SKEW)
    sql = "INSERT INTO faults_runs (id, job_id, pid, started, clock) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
    write(sql, (run_id, job_id, os.getpid(), TRUE_TIME(), time.time()))
    return run_id


def ended(run_id: str) -> None:
    write("UPDATE faults_runs SET ended = ? WHERE id = ?", (TRUE_TIME(), run_id))


# -- ordinary work ----------------------------------------------------------------------


@app.job(queue="faults", max_attempts=25, backoff=0.05)
def record(p: dict[str, Any], ctx: JobContext) -> None:
    """A normal job: a few milliseconds of work, its run recorded."""
    run_id = started(ctx.job_id)
    time.sleep(float(p.get("sleep", 0.005)))
    ended(run_id)


@app.job(queue="faults", max_attempts=25, backoff=0.05)
def tick(p: dict[str, Any], ctx: JobContext) -> None:
    """What the every-second schedule fires."""
    ended(started(ctx.job_id))


if os.environ.get("FAULTS_CRON") == "1":
    app.cron("* * * * * *", "tick", name="every_second")


# -- hostile handlers: each must end retried or dead with a readable reason --------------


@app.job(queue="faults", max_attempts=2, backoff=0.05)
def exit_process(p: dict[str, Any], ctx: JobContext) -> None:
    """Kills its own worker process mid-run, like a crashing C extension."""
    write("INSERT INTO faults_deaths (pid, at) VALUES (?, ?)", (os.getpid(), TRUE_TIME()))
    os._exit(17)


@app.job(queue="faults", max_attempts=2, backoff=0.05, timeout=1)
async def hang_async(p: dict[str, Any], ctx: JobContext) -> None:
    """Never returns; cancelled at its timeout."""
    await asyncio.Event().wait()


@app.job(queue="faults", max_attempts=2, backoff=0.05, timeout=1)
def hang_sync(p: dict[str, Any], ctx: JobContext) -> None:
    """Never returns and ignores ctx.cancelled: its thread is lost, the job is not."""
    threading.Event().wait()


@app.job(queue="faults", max_attempts=2, backoff=0.05)
def eat_memory(p: dict[str, Any], ctx: JobContext) -> None:
    """Allocates until the process's memory limit (max_memory_mb) answers MemoryError."""
    hoard = []
    while True:
        hoard.append(bytearray(32 * 1024 * 1024))


class HostileError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even describing this error fails")


@app.job(queue="faults", max_attempts=2, backoff=0.05)
def hostile_str(p: dict[str, Any], ctx: JobContext) -> None:
    """Raises an exception whose str() itself raises."""
    raise HostileError()


HOSTILE = ("exit_process", "hang_async", "hang_sync", "eat_memory", "hostile_str")
