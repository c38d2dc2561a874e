"""Scratch databases for the benchmark: a fresh SQLite file or a fresh PostgreSQL schema.

The schema is always made by Conveyor's own migrations. The few statements here only seed
finished rows and read timings back; none of them is on a measured path.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote

import psycopg

from conveyor import Conveyor

PG_URL = os.environ.get("CONVEYOR_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")

WINDOW = {
    "sqlite": "SELECT count(*), min(attempted_at), max(finished_at) FROM conveyor_jobs WHERE state = 'completed' AND id > ?",
    "postgres": "SELECT count(*), extract(epoch FROM min(attempted_at))::float8, extract(epoch FROM max(finished_at))::float8 "
    "FROM conveyor_jobs WHERE state = 'completed' AND id > %s",
}
WAITS = {
    "sqlite": "SELECT (attempted_at - created_at) * 1000.0 FROM conveyor_jobs WHERE id > ? AND attempted_at IS NOT NULL",
    "postgres": "SELECT extract(epoch FROM attempted_at - created_at)::float8 * 1000.0 FROM conveyor_jobs "
    "WHERE id > %s AND attempted_at IS NOT NULL",
}
COMPLETED = {
    "sqlite": "SELECT count(*) FROM conveyor_jobs WHERE state = 'completed' AND id > ?",
    "postgres": "SELECT count(*) FROM conveyor_jobs WHERE state = 'completed' AND id > %s",
}
UNFINISHED = {
    "sqlite": "SELECT EXISTS (SELECT 1 FROM conveyor_jobs WHERE state IN ('waiting', 'scheduled', 'pending', 'running') AND id > ?)",
    "postgres": "SELECT EXISTS (SELECT 1 FROM conveyor_jobs WHERE state IN ('waiting', 'scheduled', 'pending', 'running') AND id > %s)",
}
LAST_ID = "SELECT coalesce(max(id), 0) FROM conveyor_jobs"
# Finished rows as a long-running queue leaves them: completed, with a result-free payload.
SEED_FINISHED = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO conveyor_jobs (type, queue, state, payload, attempt, max_attempts, run_at, created_at,
                                   attempted_at, finished_at, lease_token)
        SELECT 'noop', 'bench', 'completed', '{"i":' || i || '}', 1, 1, t, t, t, t, 1
        FROM n, (SELECT (julianday('now') - 2440587.5) * 86400.0 - 3600 AS t)
    """,
    "postgres": """
        INSERT INTO conveyor_jobs (type, queue, state, payload, attempt, max_attempts, run_at, created_at,
                                   attempted_at, finished_at, lease_token)
        SELECT 'noop', 'bench', 'completed', jsonb_build_object('i', i), 1, 1, t, t, t, t, 1
        FROM generate_series(1, %s) AS i, (SELECT now() - interval '1 hour' AS t) AS s
    """,
}


@dataclass
class Scratch:
    """One fresh database for one measurement, dropped on close."""

    backend: str
    url: str
    _dir: str | None = None
    _schema: str | None = None
    _conn: Any = None  # the harness's own connection, kept: opening one per poll costs CPU the worker needs

    @classmethod
    def create(cls, backend: str) -> Scratch:
        if backend == "sqlite":
            folder = tempfile.mkdtemp(prefix="conveyor-bench-")
            scratch = cls(backend, f"sqlite:///{folder}/bench.db", _dir=folder)
        elif backend == "postgres":
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in PG_URL else "?"
            scratch = cls(backend, f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}", _schema=schema)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        app = Conveyor(scratch.url)
        try:
            app.backend.migrate()
        finally:
            app.close()
        return scratch

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        if self._schema is not None:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self._schema} CASCADE")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- direct reads and writes (set-up and timing only) --------------------------------

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """One statement in autocommit mode (no transaction is held open between calls)."""
        if self._conn is None:
            if self.backend == "sqlite":
                self._conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
            else:
                self._conn = psycopg.connect(self.url, autocommit=True)
        cur = self._conn.execute(sql, args)
        return cur.fetchall() if cur.description else []

    def last_id(self) -> int:
        return int(self.query(LAST_ID)[0][0])

    def completed_after(self, after_id: int) -> int:
        return int(self.query(COMPLETED[self.backend], after_id)[0][0])

    def unfinished_after(self, after_id: int) -> bool:
        """Whether any job after ``after_id`` is still to run: a lookup, where counting the
        completed ones would cost the machine ~3 ms of CPU a poll by the end of a drain."""
        return bool(self.query(UNFINISHED[self.backend], after_id)[0][0])

    def window(self, after_id: int) -> tuple[int, float, float]:
        """Completed jobs after ``after_id``: count, first claim and last finish (database clock)."""
        count, first, last = self.query(WINDOW[self.backend], after_id)[0]
        return int(count), float(first or 0.0), float(last or 0.0)

    def waits_ms(self, after_id: int) -> list[float]:
        """Enqueue-to-claim delay of each job after ``after_id``, in ms, both ends on the database's clock."""
        return sorted(float(r[0]) for r in self.query(WAITS[self.backend], after_id))

    def seed_finished(self, count: int) -> None:
        """Leave ``count`` completed jobs in the table, as a busy queue without pruning would."""
        if count <= 0:
            return
        self.query(SEED_FINISHED[self.backend], count)
        # A table that has been running for a while has been vacuumed and analysed; without
        # this the first drains would pay for autovacuum's first pass over the fresh rows.
        self.query("VACUUM ANALYZE conveyor_jobs" if self.backend == "postgres" else "ANALYZE")
