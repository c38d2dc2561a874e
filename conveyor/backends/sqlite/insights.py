"""SQLiteInsights: the monitoring queries and retention deletes for the SQLite store."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

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
from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.backends.sqlite.clock import NOW
from conveyor.errors import BackendError
from conveyor.job import JobState
from conveyor.timeutil import from_epoch

# The covering (state, queue, type) index answers this without touching a row.
ACTIVE_COUNTS = (
    "SELECT queue, type, state, count(*) FROM conveyor_jobs "
    "WHERE state IN ('waiting', 'scheduled', 'pending', 'running', 'dead') GROUP BY state, queue, type"
)
# Every completed row the retention policy keeps: counted through SlowCounts.
FINISHED_COUNTS = (
    "SELECT queue, type, state, count(*) FROM conveyor_jobs WHERE state IN ('completed', 'cancelled', 'expired') GROUP BY state, queue, type"
)

# Recent finishes come from the (finished_at, state, queue, type) index alone.
FINISHED_BUCKETS = """
SELECT CAST((finished_at - :start) / :bucket AS INTEGER) AS b, queue, type, state, count(*)
FROM conveyor_jobs WHERE finished_at >= :start
GROUP BY b, queue, type, state
"""

# Due but not started: pending, and scheduled jobs whose time came before a worker staged them.
PENDING_AGES = """
SELECT queue, type, count(*), min(run_at) FROM (
    SELECT queue, type, run_at FROM conveyor_jobs WHERE state = 'pending'
    UNION ALL
    SELECT queue, type, run_at FROM conveyor_jobs WHERE state = 'scheduled' AND run_at <= :now
) GROUP BY queue, type
"""

DURATIONS = """
SELECT queue, type, finished_at - attempted_at, max(attempted_at - run_at, 0.0)
FROM conveyor_jobs
WHERE finished_at >= :start AND state = 'completed' AND attempted_at IS NOT NULL
ORDER BY finished_at DESC LIMIT :limit
"""

# A finished parent stays while a child that depends on it has not finished: the child reads its
# parents' results when it runs (a fan-in may wait on its slowest parent for longer than retention).
AWAITED = (
    "NOT EXISTS (SELECT 1 FROM conveyor_deps d JOIN conveyor_jobs c ON c.id = d.job_id "
    "WHERE d.depends_on = conveyor_jobs.id AND c.state NOT IN ('completed', 'dead', 'cancelled'))"
)
OLD_FINISHED = (
    "SELECT id FROM conveyor_jobs WHERE finished_at < :cutoff AND state = :state AND " + AWAITED + " ORDER BY finished_at LIMIT :limit"
)
NEXT_COMPLETED_TYPE = "SELECT min(type) FROM conveyor_jobs WHERE state = 'completed' AND type > ?"
# The newest completed job past the N to keep, by (finished_at, id) so ties are cut exactly.
NTH_NEWEST = (
    "SELECT finished_at, id FROM conveyor_jobs WHERE state = 'completed' AND type = ? "
    "ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET ?"
)
OLDER_OF_TYPE = (
    "SELECT id FROM conveyor_jobs WHERE state = 'completed' AND type = ? AND (finished_at < ? OR (finished_at = ? AND id <= ?)) "
    "AND " + AWAITED + " ORDER BY finished_at, id LIMIT ?"
)
COUNT_OLDER_OF_TYPE = (
    "SELECT count(*) FROM conveyor_jobs WHERE state = 'completed' AND type = ? AND (finished_at < ? OR (finished_at = ? AND id <= ?)) "
    "AND " + AWAITED
)

RECENT_WORKFLOWS = """
SELECT workflow_id, max(id) AS newest FROM conveyor_jobs WHERE workflow_id IS NOT NULL
GROUP BY workflow_id ORDER BY newest DESC LIMIT ?
"""


class SQLiteInsights:
    """Reads on the calling thread's connection; writes in short ``BEGIN IMMEDIATE`` transactions."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self.backend = backend
        self.finished_counts = SlowCounts()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so every number in a snapshot comes from the same moment."""
        conn = self.backend.conn
        own = not conn.in_transaction
        try:
            if own:
                conn.execute("BEGIN")
            yield conn
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite: {exc}") from exc
        finally:
            if own and conn.in_transaction:
                conn.execute("COMMIT")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.backend.transaction()  # the backend's public write transaction, one shape for all

    # -- stats --------------------------------------------------------------------------

    def stats_snapshot(self, params: SnapshotParams) -> Snapshot:
        with self._read() as conn:
            now = float(conn.execute(f"SELECT {NOW}").fetchone()[0])
            start = now - params.window
            active = [StateCount(q, t, JobState(s), n) for q, t, s, n in conn.execute(ACTIVE_COUNTS)]
            done, done_age = self.finished_counts.get(
                lambda: [StateCount(q, t, JobState(s), n) for q, t, s, n in conn.execute(FINISHED_COUNTS)]
            )
            states = (*active, *done)
            finished = tuple(
                FinishedBucket(min(int(b), int(params.window // params.bucket) - 1), q, t, JobState(s), n)
                for b, q, t, s, n in conn.execute(FINISHED_BUCKETS, {"start": start, "bucket": params.bucket})
            )
            pending = tuple(PendingAge(q, t, n, from_epoch(due)) for q, t, n, due in conn.execute(PENDING_AGES, {"now": now}))
            durations = tuple(
                Duration(q, t, max(float(run), 0.0), float(wait))
                for q, t, run, wait in conn.execute(DURATIONS, {"start": start, "limit": params.duration_samples})
            )
            paused = tuple((q, from_epoch(at)) for q, at in conn.execute("SELECT queue, paused_at FROM conveyor_queue_pauses ORDER BY queue"))
        return Snapshot(from_epoch(now), params, states, finished, pending, durations, done_age, paused)

    # -- audit --------------------------------------------------------------------------

    def audit_record(self, entry: NewAuditEntry) -> int:
        with self._write() as conn:
            row = conn.execute(
                f"INSERT INTO conveyor_audit (at, actor, action, target, detail) VALUES ({NOW}, ?, ?, ?, ?) RETURNING id",
                (entry.actor, entry.action, entry.target, json.dumps(entry.detail, default=str)),
            ).fetchone()
        return int(row[0])

    def audit_list(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, at, actor, action, target, detail FROM conveyor_audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before_id if before_id is not None else 2**62, limit),
            ).fetchall()
        return [AuditEntry(r[0], from_epoch(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    # -- retention ----------------------------------------------------------------------

    def tables_vacuum(self, min_dead: int) -> list[str]:
        """Nothing to do: SQLite updates rows in place and reuses freed pages; it keeps no dead
        row versions for a vacuum to remove (its WAL is checkpointed by the connections)."""
        return []

    def jobs_prune(self, params: PruneParams) -> int:
        with self._write() as conn:
            ids = retention_plan(SQLiteRetention(conn), params)
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM conveyor_marks WHERE job_id IN ({marks})", ids)
            return conn.execute(
                f"DELETE FROM conveyor_jobs WHERE id IN ({marks}) AND state IN ('completed', 'cancelled', 'expired')", ids
            ).rowcount

    def jobs_prunable(self, params: PruneParams) -> int:
        with self._read() as conn:
            return retention_count(SQLiteRetention(conn), params)

    # -- dashboard sessions -------------------------------------------------------------

    def sessions_open(self, session_id: str, actor: str, seconds: float) -> None:
        with self._write() as conn:
            conn.execute(f"DELETE FROM conveyor_sessions WHERE expires_at <= {NOW}")
            conn.execute(
                f"INSERT INTO conveyor_sessions (id, actor, created_at, expires_at) VALUES (?, ?, {NOW}, {NOW} + ?)",
                (session_id, actor, seconds),
            )

    def sessions_live(self, session_id: str) -> bool:
        with self._read() as conn:
            return conn.execute(f"SELECT 1 FROM conveyor_sessions WHERE id = ? AND expires_at > {NOW}", (session_id,)).fetchone() is not None

    def sessions_close(self, session_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM conveyor_sessions WHERE id = ?", (session_id,)).rowcount > 0

    def workers_forget(self, older_than: float) -> int:
        with self._write() as conn:
            return conn.execute(f"DELETE FROM conveyor_workers WHERE heartbeat_at < {NOW} - ?", (older_than,)).rowcount

    # -- workflows ----------------------------------------------------------------------

    def workflows_recent(self, limit: int = 50) -> list[WorkflowSummary]:
        with self._read() as conn:
            ids = [r[0] for r in conn.execute(RECENT_WORKFLOWS, (limit,))]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"SELECT workflow_id, state, count(*), min(created_at), max(finished_at) FROM conveyor_jobs "
                f"WHERE workflow_id IN ({marks}) GROUP BY workflow_id, state",
                ids,
            ).fetchall()
        return summarise_workflows(ids, [(r[0], r[1], r[2], from_epoch(r[3]), None if r[4] is None else from_epoch(r[4])) for r in rows])


class SQLiteRetention:
    """``RetentionQueries`` in SQLite's SQL, on one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.now = float(conn.execute(f"SELECT {NOW}").fetchone()[0])

    def finished_before(self, state: JobState, age: float, limit: int) -> list[int]:
        return [r[0] for r in self.conn.execute(OLD_FINISHED, {"cutoff": self.now - age, "state": state.value, "limit": limit})]

    def count_finished_before(self, state: JobState, age: float) -> int:
        sql = "SELECT count(*) FROM conveyor_jobs WHERE finished_at < ? AND state = ? AND " + AWAITED
        return int(self.conn.execute(sql, (self.now - age, state.value)).fetchone()[0])

    def completed_types(self) -> Iterator[str]:
        """By one index seek per type (a loose index scan)."""
        last = ""
        while True:
            row = self.conn.execute(NEXT_COMPLETED_TYPE, (last,)).fetchone()
            if row is None or row[0] is None:
                return
            last = row[0]
            yield last

    def beyond_newest(self, job_type: str, keep: int, limit: int) -> list[int]:
        nth = self.conn.execute(NTH_NEWEST, (job_type, keep)).fetchone()
        if nth is None:
            return []
        return [r[0] for r in self.conn.execute(OLDER_OF_TYPE, (job_type, nth[0], nth[0], nth[1], limit))]

    def count_beyond_newest(self, job_type: str, keep: int) -> int:
        nth = self.conn.execute(NTH_NEWEST, (job_type, keep)).fetchone()
        if nth is None:
            return 0
        return int(self.conn.execute(COUNT_OLDER_OF_TYPE, (job_type, nth[0], nth[0], nth[1])).fetchone()[0])
