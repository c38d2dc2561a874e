"""The app that bench/chaos.py's worker processes run: each run records itself in chaos_runs."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from typing import Any

from conveyor import Conveyor, JobContext

app = Conveyor()  # CONVEYOR_DATABASE_URL from the environment
URL = app.settings.database_url
local = threading.local()

CREATE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS chaos_runs (id INTEGER PRIMARY KEY, job_id INTEGER, pid INTEGER, started REAL, ended REAL)",
    "postgres": "CREATE TABLE IF NOT EXISTS chaos_runs (id BIGSERIAL PRIMARY KEY, job_id BIGINT, pid INTEGER, started DOUBLE PRECISION, ended DOUBLE PRECISION)",
}


def connection() -> Any:
    """This thread's connection for the run log (the log is the evidence, kept apart from the queue)."""
    conn = getattr(local, "conn", None)
    if conn is None:
        if URL.startswith("sqlite"):
            conn = sqlite3.connect(URL.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
        else:
            import psycopg

            conn = psycopg.connect(URL, autocommit=True)
        local.conn = conn
    return conn


def mark(sql_sqlite: str, sql_pg: str, args: tuple[Any, ...]) -> Any:
    conn = connection()
    cur = conn.execute(sql_sqlite, args) if isinstance(conn, sqlite3.Connection) else conn.execute(sql_pg, args)
    return cur.fetchone() if cur.description else None


@app.job(max_attempts=25, backoff=0.05)
def chaos_job(p: dict[str, Any], ctx: JobContext) -> None:
    (run_id,) = mark(
        "INSERT INTO chaos_runs (job_id, pid, started) VALUES (?, ?, ?) RETURNING id",
        "INSERT INTO chaos_runs (job_id, pid, started) VALUES (%s, %s, %s) RETURNING id",
        (ctx.job_id, os.getpid(), time.time()),
    )
    time.sleep(random.uniform(0.03, 0.12))
    mark("UPDATE chaos_runs SET ended = ? WHERE id = ?", "UPDATE chaos_runs SET ended = %s WHERE id = %s", (time.time(), run_id))
