"""PostgresInsights: the monitoring queries and retention deletes for the PostgreSQL store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from conveyor.backends.insights import (
    AuditEntry,
    Duration,
    FinishedBucket,
    NewAuditEntry,
    PendingAge,
    PruneParams,
    SlowCounts,
    Snapshot,
    SnapshotParams,
    StateCount,
    WorkflowSummary,
    retention_count,
    retention_plan,
    summarise_workflows,
)
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.job import JobState

# An index-only scan of (state, queue, type).
ACTIVE_COUNTS = (
    "SELECT queue, type, state, count(*) FROM conveyor_jobs "
    "WHERE state IN ('waiting', 'scheduled', 'pending', 'running', 'dead') GROUP BY state, queue, type"
)
# Every completed row the retention policy keeps: counted through SlowCounts.
FINISHED_COUNTS = (
    "SELECT queue, type, state, count(*) FROM conveyor_jobs WHERE state IN ('completed', 'cancelled', 'expired') GROUP BY state, queue, type"
)

# Recent finishes from the (finished_at, state, queue, type) index alone.
FINISHED_BUCKETS = """
SELECT floor(extract(epoch FROM finished_at - %(start)s) / %(bucket)s)::int AS b, queue, type, state, count(*)
FROM conveyor_jobs WHERE finished_at >= %(start)s
GROUP BY b, queue, type, state
"""

PENDING_AGES = """
SELECT queue, type, count(*), min(run_at) FROM (
    SELECT queue, type, run_at FROM conveyor_jobs WHERE state = 'pending'
    UNION ALL
    SELECT queue, type, run_at FROM conveyor_jobs WHERE state = 'scheduled' AND run_at <= %(now)s
) AS due GROUP BY queue, type
"""

DURATIONS = """
SELECT queue, type, extract(epoch FROM finished_at - attempted_at)::float8,
       greatest(extract(epoch FROM attempted_at - run_at)::float8, 0.0)
FROM conveyor_jobs
WHERE finished_at >= %(start)s AND state = 'completed' AND attempted_at IS NOT NULL
ORDER BY finished_at DESC LIMIT %(limit)s
"""

# A finished parent stays while a child that depends on it has not finished: the child reads its
# parents' results when it runs (a fan-in may wait on its slowest parent for longer than retention).
AWAITED = (
    "NOT EXISTS (SELECT 1 FROM conveyor_deps d JOIN conveyor_jobs c ON c.id = d.job_id "
    "WHERE d.depends_on = conveyor_jobs.id AND c.state NOT IN ('completed', 'dead', 'cancelled'))"
)
OLD_FINISHED = (
    "SELECT id FROM conveyor_jobs WHERE finished_at < %s AND state = %s AND " + AWAITED + " ORDER BY finished_at LIMIT %s FOR UPDATE SKIP LOCKED"
)
NEXT_COMPLETED_TYPE = "SELECT min(type) FROM conveyor_jobs WHERE state = 'completed' AND type > %s"
NTH_NEWEST = (
    "SELECT finished_at, id FROM conveyor_jobs WHERE state = 'completed' AND type = %s "
    "ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET %s"
)
OLDER_OF_TYPE = (
    "SELECT id FROM conveyor_jobs WHERE state = 'completed' AND type = %s AND (finished_at, id) <= (%s, %s) "
    "AND " + AWAITED + " ORDER BY finished_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)
COUNT_OLDER_OF_TYPE = (
    "SELECT count(*) FROM conveyor_jobs WHERE state = 'completed' AND type = %s AND (finished_at, id) <= (%s, %s) AND " + AWAITED
)

RECENT_WORKFLOWS = """
SELECT workflow_id, max(id) AS newest FROM conveyor_jobs WHERE workflow_id IS NOT NULL
GROUP BY workflow_id ORDER BY newest DESC LIMIT %s
"""


class PostgresInsights:
    """Each call is one transaction on a pooled connection of the backend."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.finished_counts = SlowCounts()

    def _one(self, conn: psycopg.Connection[Any], sql: str, args: Any = None) -> Any:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return row[0]

    # -- stats --------------------------------------------------------------------------

    def stats_snapshot(self, params: SnapshotParams) -> Snapshot:
        last = int(params.window // params.bucket) - 1
        with self.backend.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            now: datetime = self._one(conn, "SELECT now()")
            start = now - timedelta(seconds=params.window)
            active = [StateCount(q, t, JobState(s), n) for q, t, s, n in conn.execute(ACTIVE_COUNTS)]
            done, done_age = self.finished_counts.get(
                lambda: [StateCount(q, t, JobState(s), n) for q, t, s, n in conn.execute(FINISHED_COUNTS)]
            )
            states = (*active, *done)
            finished = tuple(
                FinishedBucket(min(b, last), q, t, JobState(s), n)
                for b, q, t, s, n in conn.execute(FINISHED_BUCKETS, {"start": start, "bucket": params.bucket})
            )
            pending = tuple(PendingAge(q, t, n, due) for q, t, n, due in conn.execute(PENDING_AGES, {"now": now}))
            durations = tuple(
                Duration(q, t, max(run, 0.0), wait)
                for q, t, run, wait in conn.execute(DURATIONS, {"start": start, "limit": params.duration_samples})
            )
            paused = tuple(conn.execute("SELECT queue, paused_at FROM conveyor_queue_pauses ORDER BY queue").fetchall())
        return Snapshot(now, params, states, finished, pending, durations, done_age, paused)

    # -- audit --------------------------------------------------------------------------

    def audit_record(self, entry: NewAuditEntry) -> int:
        with self.backend.transaction() as conn:
            return int(
                self._one(
                    conn,
                    "INSERT INTO conveyor_audit (actor, action, target, detail) VALUES (%s, %s, %s, %s) RETURNING id",
                    (entry.actor, entry.action, entry.target, Jsonb(entry.detail, dumps=jsonb_dumps)),
                )
            )

    def audit_list(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        with self.backend.transaction() as conn:
            rows = conn.execute(
                "SELECT id, at, actor, action, target, detail FROM conveyor_audit WHERE id < %s ORDER BY id DESC LIMIT %s",
                (before_id if before_id is not None else 2**62, limit),
            ).fetchall()
        return [AuditEntry(*r) for r in rows]

    # -- retention ----------------------------------------------------------------------

    def jobs_prune(self, params: PruneParams) -> int:
        with self.backend.transaction() as conn:
            ids = retention_plan(PostgresRetention(conn), params)
            if not ids:
                return 0
            conn.execute("DELETE FROM conveyor_marks WHERE job_id = ANY(%s)", (ids,))
            return conn.execute(
                "DELETE FROM conveyor_jobs WHERE id = ANY(%s) AND state IN ('completed', 'cancelled', 'expired')", (ids,)
            ).rowcount

    def jobs_prunable(self, params: PruneParams) -> int:
        with self.backend.transaction() as conn:
            return retention_count(PostgresRetention(conn), params)

    # -- dashboard sessions -------------------------------------------------------------

    def sessions_open(self, session_id: str, actor: str, seconds: float) -> None:
        with self.backend._conn() as conn:
            conn.execute("DELETE FROM conveyor_sessions WHERE expires_at <= now()")
            conn.execute(
                "INSERT INTO conveyor_sessions (id, actor, expires_at) VALUES (%s, %s, now() + make_interval(secs => %s))",
                (session_id, actor, seconds),
            )

    def sessions_live(self, session_id: str) -> bool:
        with self.backend._conn() as conn:
            return conn.execute("SELECT 1 FROM conveyor_sessions WHERE id = %s AND expires_at > now()", (session_id,)).fetchone() is not None

    def sessions_close(self, session_id: str) -> bool:
        with self.backend._conn() as conn:
            return conn.execute("DELETE FROM conveyor_sessions WHERE id = %s", (session_id,)).rowcount > 0

    def tables_vacuum(self, min_dead: int) -> list[str]:
        """VACUUM Conveyor's tables that hold at least ``min_dead`` dead row versions; the names vacuumed.

        Autovacuum normally does this (migration 0008 tunes it for these tables), but it may be
        off, or busy elsewhere, and a queue's claim index cannot wait. SKIP_LOCKED: a table
        another worker (or autovacuum) is vacuuming is left to it. Outside a transaction, as
        VACUUM must be; valid through a transaction-mode pooler too.
        """
        with self.backend.transaction() as conn:
            names = [r[0] for r in conn.execute(DEAD_TABLES, (min_dead,))]
            conn.commit()
            if not names:
                return []
            conn.autocommit = True
            try:
                for name in names:
                    conn.execute(f"VACUUM (SKIP_LOCKED) {name}")  # names from the catalogue, matched to ours
            finally:
                conn.autocommit = False
        return names

    def workers_forget(self, older_than: float) -> int:
        with self.backend.transaction() as conn:
            return conn.execute(
                "DELETE FROM conveyor_workers WHERE heartbeat_at < now() - make_interval(secs => %s)", (older_than,)
            ).rowcount

    # -- workflows ----------------------------------------------------------------------

    def workflows_recent(self, limit: int = 50) -> list[WorkflowSummary]:
        with self.backend.transaction() as conn:
            ids = [r[0] for r in conn.execute(RECENT_WORKFLOWS, (limit,))]
            if not ids:
                return []
            rows = conn.execute(
                "SELECT workflow_id, state, count(*), min(created_at), max(finished_at) FROM conveyor_jobs "
                "WHERE workflow_id = ANY(%s) GROUP BY workflow_id, state",
                (ids,),
            ).fetchall()
        return summarise_workflows(ids, [tuple(r) for r in rows])



class PostgresRetention:
    """``RetentionQueries`` in PostgreSQL's SQL, on one open transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.now: datetime = self._one("SELECT now()")

    def _one(self, sql: str, args: Any = None) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def finished_before(self, state: JobState, age: float, limit: int) -> list[int]:
        return [r[0] for r in self.conn.execute(OLD_FINISHED, (self.now - timedelta(seconds=age), state.value, limit))]

    def count_finished_before(self, state: JobState, age: float) -> int:
        sql = "SELECT count(*) FROM conveyor_jobs WHERE finished_at < %s AND state = %s AND " + AWAITED
        return int(self._one(sql, (self.now - timedelta(seconds=age), state.value)))

    def completed_types(self) -> Iterator[str]:
        """By one index seek per type (a loose index scan)."""
        last = ""
        while True:
            found = self._one(NEXT_COMPLETED_TYPE, (last,))
            if found is None:
                return
            last = found
            yield last

    def beyond_newest(self, job_type: str, keep: int, limit: int) -> list[int]:
        nth = self.conn.execute(NTH_NEWEST, (job_type, keep)).fetchone()
        if nth is None:
            return []
        return [r[0] for r in self.conn.execute(OLDER_OF_TYPE, (job_type, nth[0], nth[1], limit))]

    def count_beyond_newest(self, job_type: str, keep: int) -> int:
        nth = self.conn.execute(NTH_NEWEST, (job_type, keep)).fetchone()
        if nth is None:
            return 0
        return int(self._one(COUNT_OLDER_OF_TYPE, (job_type, nth[0], nth[1])))

DEAD_TABLES = """
SELECT relname FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname IN ('conveyor_jobs', 'conveyor_workers', 'conveyor_rate_starts', 'conveyor_schedules')
  AND n_dead_tup >= %s
  AND coalesce(greatest(last_vacuum, last_autovacuum), '-infinity') < now() - interval '30 seconds'
ORDER BY relname
"""
"""Conveyor's tables with many dead row versions that nothing vacuumed in the last 30 seconds
(under a pinned horizon a vacuum removes none of them: it is not repeated at every pass)."""


def jsonb_dumps(value: Any) -> str:
    return json.dumps(value, default=str)
