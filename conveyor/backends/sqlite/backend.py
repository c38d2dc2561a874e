"""SQLiteBackend: the embedded store (stdlib sqlite3, WAL, BEGIN IMMEDIATE, UPDATE … RETURNING)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from operator import attrgetter
from typing import Any
from urllib.parse import unquote, urlsplit

from conveyor.backends import migrate
from conveyor.backends.base import (
    FINISHED_SQL,
    JOB_COLUMNS,
    ClaimParams,
    FinishParams,
    FireParams,
    Inserted,
    JobFilter,
    Lease,
    NewJob,
    NewSchedule,
    Schedule,
    WorkerInfo,
    adoption,
    claimed,
    corrupt_reason,
    dependency_ids,
    initial_state,
    read_json_columns,
    read_meta,
    read_state,
    salvaged_job,
)
from conveyor.backends.listeners import Listeners
from conveyor.backends.sqlite import flow, graph
from conveyor.backends.sqlite.clock import NOW
from conveyor.backends.sqlite.turns import SPIN, WriteTurns
from conveyor.errors import BackendError, BackendUnavailable, ConfigError
from conveyor.job import FINISHED_STATES, Job, JobState, job_from_fields
from conveyor.timeutil import epoch_memo, from_epoch, to_epoch

"""The database's clock in epoch seconds (``unixepoch('subsec')`` returns NULL on SQLite 3.40)."""

FINISHED = FINISHED_SQL
UNFINISHED = json.dumps(["waiting", "scheduled", "pending", "running"])

WATCH_INTERVAL = 0.005
"""Seconds between looks at another process's commits (PRAGMA data_version) by a listening worker."""

INSERT_JOB = f"""
INSERT INTO conveyor_jobs (type, queue, state, payload, priority, max_attempts, run_at, created_at,
                           timeout, backoff, unique_key, unique_until, workflow_id, parent_id, meta, expires_at)
SELECT :type, :queue,
       CASE WHEN :initial IS NOT NULL THEN :initial WHEN r.at > {NOW} THEN 'scheduled' ELSE 'pending' END,
       :payload, :priority, :max_attempts, r.at, {NOW}, :timeout, :backoff, :unique_key,
       CASE WHEN :unique_for IS NULL THEN NULL ELSE {NOW} + :unique_for END,
       :workflow_id, :parent_id, :meta,
       coalesce(:expires_at, CASE WHEN :expires_in IS NULL THEN NULL ELSE {NOW} + :expires_in END)
FROM (SELECT coalesce(:run_at, {NOW} + :delay) AS at) AS r
WHERE true
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id
"""

INSERT_ROWS = f"""
INSERT INTO conveyor_jobs (type, queue, state, payload, priority, max_attempts, run_at, created_at,
                           timeout, backoff, workflow_id, parent_id, meta)
SELECT r.column1, r.column2, CASE WHEN r.at > {NOW} THEN 'scheduled' ELSE 'pending' END, r.column3, r.column4,
       r.column5, r.at, {NOW}, {{timeout}}, {{backoff}}, {{workflow_id}}, {{parent_id}}, {{meta}}
FROM (SELECT *, coalesce({{run_at}}, {NOW} + column6) AS at FROM (VALUES {{rows}})) AS r
RETURNING id
"""
"""Many plain jobs (no unique key, no dependencies) in one statement, ``{rows}`` being that many
``(type, queue, payload, priority, max_attempts, delay, ...)`` tuples, then those of the
nullable columns (``INSERT_NULLABLE``) that some job of the chunk sets: the others are written
as NULL, not bound (sqlite3 binds each None through its adapter lookup, ~0.8 µs a value). Rows
go in in order, so their ascending ids follow it (one writer at a time)."""
INSERT_BOUND = ("type", "queue", "payload", "priority", "max_attempts", "delay")
INSERT_NULLABLE = ("run_at", "timeout", "backoff", "workflow_id", "parent_id", "meta")
INSERT_CHUNK = 1000  # at most 12,000 bound values, well under SQLite's limit of 32,766

RELEASE_UNIQUE = f"""
UPDATE conveyor_jobs SET unique_key = NULL
WHERE unique_key = ? AND (unique_until <= {NOW} OR state NOT IN (SELECT value FROM json_each(?)))
"""
"""A key stops blocking once its holder's window ran out or the holder left the blocking states."""

REPLACE_UNIQUE = f"""
UPDATE conveyor_jobs SET payload = :payload, run_at = r.at, priority = :priority,
       state = CASE WHEN r.at > {NOW} THEN 'scheduled' ELSE 'pending' END
FROM (SELECT coalesce(:run_at, {NOW} + :delay) AS at) AS r
WHERE unique_key = :unique_key AND state IN ('scheduled', 'pending')
"""
"""Debounce: the not-yet-started holder of the key takes the new payload and run time."""

EXPIRE_DUE = f"""
UPDATE conveyor_jobs SET state = 'expired', finished_at = {NOW}, unique_key = NULL,
    errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json_object(
        'attempt', attempt, 'at', {NOW}, 'error', 'expired: not started before its expiry'))
WHERE id IN (SELECT id FROM conveyor_jobs INDEXED BY conveyor_jobs_expiry
             WHERE expires_at IS NOT NULL AND state IN ('waiting', 'scheduled', 'pending') AND expires_at <= {NOW} LIMIT 1000)
RETURNING id
"""
"""Unstarted jobs past their expiry end, in every claim before it picks: an expired job never runs."""

STAGE_DUE = f"""
UPDATE conveyor_jobs SET state = 'pending'
WHERE id IN (SELECT id FROM conveyor_jobs INDEXED BY conveyor_jobs_due
             WHERE state = 'scheduled' AND run_at <= {NOW} ORDER BY run_at LIMIT 1000)
"""
"""Due scheduled jobs become pending, in every claim. The index is named: a database that was never
analysed (SQLite keeps no statistics of its own) otherwise reads every scheduled job through the
state index and sorts them, 30 ms a claim with 100,000 delayed jobs, against 0.2 ms."""

FINISH_JOBS = f"""
UPDATE conveyor_jobs SET
    state = CASE WHEN o.state = 'pending' AND o.delay > 0 THEN 'scheduled' ELSE o.state END,
    run_at = CASE WHEN o.state = 'pending' THEN {NOW} + o.delay ELSE run_at END,
    finished_at = CASE WHEN o.state IN {FINISHED} THEN {NOW} ELSE NULL END,
    attempt = attempt - o.refund,
    result = o.result,
    errors = CASE WHEN o.error IS NULL THEN errors ELSE json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json_object(
        'attempt', attempt, 'at', {NOW}, 'error', o.error, 'traceback', o.traceback, 'worker_id', o.worker_id)) END,
    worker_id = NULL,
    lease_expires_at = NULL
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token, json_extract(value, '$[2]') AS state,
             json_extract(value, '$[3]') AS delay, json_extract(value, '$[4]') AS refund, json_extract(value, '$[5]') AS result,
             json_extract(value, '$[6]') AS error, json_extract(value, '$[7]') AS traceback,
             json_extract(value, '$[8]') AS worker_id
      FROM json_each(?)) AS o
WHERE conveyor_jobs.id = o.id AND conveyor_jobs.lease_token = o.token AND +conveyor_jobs.state = 'running'
"""
"""Every outcome of a batch in one statement, each fenced by its lease token. The outcomes come
as one JSON array ``[[id, token, state, delay, refund, result, error, traceback, worker_id]]``;
the unary ``+`` keeps the planner on the primary key rather than the running-jobs index."""
FINISH_RETURNING = " RETURNING conveyor_jobs.id"

RESCUE = f"""
UPDATE conveyor_jobs SET
    state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN {NOW} ELSE NULL END,
    run_at = {NOW},
    errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json_object('attempt', attempt, 'at', {NOW},
        'error', 'worker lost: its lease expired before the run finished', 'worker_id', worker_id)),
    worker_id = NULL,
    lease_expires_at = NULL
WHERE id IN (SELECT id FROM conveyor_jobs INDEXED BY conveyor_jobs_lease WHERE state = 'running' AND lease_expires_at <= {NOW} LIMIT ?)
RETURNING id, state
"""


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db``; ``sqlite:///:memory:`` gives MEMORY (a private store, see memory_path)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError("database_url", f"not a sqlite URL: {url!r}")
    path = unquote(parts.path).removeprefix("/")
    if path == ":memory:" or (not path and parts.netloc == ":memory:"):
        return MEMORY
    if not path:
        raise ConfigError("database_url", "SQLite needs a file (workers are separate processes): sqlite:///path/to.db")
    return path


MEMORY = ":memory:"


def memory_path() -> str:
    """A fresh store in RAM for ``sqlite:///:memory:`` (tests): a file on tmpfs, not SQLite's own
    ``:memory:``, so that every thread's connection sees the same database with WAL and the busy
    timeout working as on disk (a shared-cache memory database fails writers at once instead)."""
    ram = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return os.path.join(tempfile.mkdtemp(prefix="conveyor-memory-", dir=ram), "conveyor.db")


class SQLiteBackend:
    """One SQLite file shared by every process on a machine.

    Each thread gets its own connection in autocommit mode; every write is one
    ``BEGIN IMMEDIATE`` transaction, so writers queue on the busy timeout instead of
    failing on a lock upgrade.
    """

    flavour = "sqlite"

    def __init__(self, url: str, busy_timeout: float = 30.0) -> None:
        self.url = url
        self.path = path_from_url(url)
        self.memory = self.path == MEMORY  # a private store for this backend object, removed at close
        if self.memory:
            self.path = memory_path()
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._listeners = Listeners("conveyor-sqlite-watch", self._watch)
        self._cancel_listeners: list[Callable[[list[int]], None]] = []
        self._watch_rounds = 0  # looks the watcher took; a new listener waits for one, its baseline
        self._watch_turn = threading.Condition()
        self._closing = threading.Event()
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self.turns = WriteTurns(self.path)

    # -- connections -------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection with Conveyor's settings (also for callers' own transactions)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")  # a committed job survives power loss
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL; the switch takes a lock without waiting, so retry while others create the file."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise BackendError(f"SQLite: cannot enable WAL on {self.path}: {exc}") from exc
            time.sleep(0.01)

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, to a migrated database."""
        conn = self._thread_conn()
        if not self._migrated:
            self.migrate()
        return conn

    def _thread_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self, conn: sqlite3.Connection | None = None, *, worker: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``worker``: a worker's claim or completion, which lets writers
        that wait (enqueues, everything else) go first (turns.py)."""
        conn = self.conn if conn is None else conn
        if worker:
            self.turns.yield_to_waiters()
            turn = None
        else:
            turn = self.turns.waiting()
        try:
            with self._begun(conn, spin=not worker):
                yield conn
        finally:
            self.turns.done(turn)

    def _begin_spinning(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` tried every ``SPIN`` seconds up to the busy timeout, rather than
        slept on by SQLite's busy handler (1 to 100 ms a sleep: the lock is taken back meanwhile)."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + self.busy_timeout
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() > deadline:
                        raise
                time.sleep(SPIN)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    @contextmanager
    def _begun(self, conn: sqlite3.Connection, spin: bool) -> Iterator[sqlite3.Connection]:
        try:
            if spin:
                self._begin_spinning(conn)
            else:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # no write lock within the busy timeout: every write would wait alike
                raise BackendUnavailable(f"SQLite: could not start a write transaction: {exc}") from exc
            raise BackendError(f"SQLite: could not start a write transaction: {exc}") from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            rollback(conn)
            raise BackendError(f"SQLite: {exc}") from exc
        except BaseException:
            rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # e.g. disk full while writing the WAL: the transaction is not kept
            rollback(conn)
            raise BackendError(f"SQLite: could not commit: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection; pass it as ``connection=``."""
        with self._write() as conn:
            yield conn
        self._notify()

    def close(self) -> None:
        watcher = self._listeners.detach()
        if watcher is not None:
            self._closing.set()
            watcher.join(timeout=5)
            self._closing.clear()
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
        self.turns.close()
        if self.memory:
            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)

    def now(self) -> datetime:
        return from_epoch(self.conn.execute(f"SELECT {NOW}").fetchone()[0])

    # -- migrations ---------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply missing migrations under one write lock, so concurrent starters agree. The
        database counts as migrated only once they are committed: a thread arriving meanwhile
        waits for them (it would find no tables otherwise)."""
        with self._migrate_lock:
            applied = self._migrate(self._thread_conn())
            self._migrated = True
        return applied

    def _migrate(self, conn: sqlite3.Connection) -> list[int]:
        applied: list[int] = []
        with self._write(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS conveyor_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM conveyor_migrations")}
            for migration in migrate.load(self.flavour):
                if migration.version in done:
                    continue
                for statement in split_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO conveyor_migrations (version, name, applied_at) VALUES (?, ?, {NOW})",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
        return applied

    def migrations_applied(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT version FROM conveyor_migrations ORDER BY version")]

    # -- enqueue ------------------------------------------------------------------------

    def jobs_insert(self, jobs: Sequence[NewJob], connection: Any = None) -> list[Inserted]:
        if connection is not None:
            return self._insert(connection, jobs)
        with self._write() as conn:
            inserted = self._insert(conn, jobs)
        self._notify()
        return inserted

    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Inserted]:
        if len(jobs) > 1 and not any(
            job.unique_key is not None or job.depends_on or job.expires_at is not None or job.expires_in is not None for job in jobs
        ):
            return self._insert_plain(conn, jobs)
        out: list[Inserted] = []
        for job in jobs:
            if job.unique_key is not None:
                states = UNFINISHED if job.unique_states is None else json.dumps(list(job.unique_states))
                conn.execute(RELEASE_UNIQUE, (job.unique_key, states))
            parents: list[int] = []
            initial = None
            if job.depends_on:
                parents = dependency_ids(job, out)
                initial = initial_state(job, parents, graph.parent_states(conn, parents))
            row = conn.execute(
                INSERT_JOB,
                {
                    "type": job.type,
                    "queue": job.queue,
                    "payload": job.payload,
                    "priority": job.priority,
                    "max_attempts": job.max_attempts,
                    "run_at": job.run_at,
                    "delay": job.delay,
                    "timeout": job.timeout,
                    "backoff": job.backoff,
                    "unique_key": job.unique_key,
                    "unique_for": job.unique_for,
                    "workflow_id": job.workflow_id,
                    "parent_id": job.parent_id,
                    "meta": job.meta,
                    "initial": initial,
                    "expires_at": job.expires_at,
                    "expires_in": job.expires_in,
                },
            ).fetchone()
            if row is None:  # deduplicated by its unique key
                if job.replace:
                    conn.execute(REPLACE_UNIQUE, {"payload": job.payload, "priority": job.priority, "run_at": job.run_at,
                                                  "delay": job.delay, "unique_key": job.unique_key})
                existing = conn.execute("SELECT id FROM conveyor_jobs WHERE unique_key = ?", (job.unique_key,)).fetchone()
                out.append(Inserted(existing[0], existing=True))
            else:
                out.append(Inserted(row[0]))
                if job.depends_on:
                    graph.add_edges(conn, row[0], job, parents, initial)
        return out

    @staticmethod
    def _insert_plain(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Inserted]:
        """Jobs with nothing to check per row: a multi-row insert per chunk, not a statement per job."""
        out: list[Inserted] = []
        for start in range(0, len(jobs), INSERT_CHUNK):
            chunk = jobs[start : start + INSERT_CHUNK]
            names = list(INSERT_BOUND)
            nullable = dict.fromkeys(INSERT_NULLABLE, "NULL")
            for name in INSERT_NULLABLE:
                if list(map(attrgetter(name), chunk)).count(None) < len(chunk):
                    names.append(name)
                    nullable[name] = f"column{len(names)}"
            row = attrgetter(*names)
            values = [v for j in chunk for v in row(j)]
            sql = INSERT_ROWS.format(rows=",".join([f"({','.join('?' * len(names))})"] * len(chunk)), **nullable)
            out += [Inserted(r[0]) for r in sorted(conn.execute(sql, values).fetchall())]
        return out

    # -- the life of a run --------------------------------------------------------------

    def jobs_claim(self, params: ClaimParams) -> list[Job]:
        return self.read_claimed(self.jobs_claim_rows(params))

    def read_claimed(self, rows: Sequence[Any]) -> list[Job]:
        """Claimed rows as Jobs, in claim order. Apart from the claim so that a worker reads them on
        its event loop while its database thread goes on to the next transaction."""
        at = epoch_memo()
        return claimed(rows, lambda r: self._job(r, at))

    def jobs_claim_rows(self, params: ClaimParams) -> list[Any]:
        """The claim's transaction; its rows as the driver returns them (see ``read_claimed``)."""
        return self._tolerant(lambda: self._claim_rows(params))

    def _claim_rows(self, params: ClaimParams) -> list[Any]:
        if params.limits or params.types or params.aging:
            return self._claim_flow(params)
        branches = " UNION ALL ".join(
            "SELECT * FROM (SELECT id, priority FROM conveyor_jobs WHERE state = 'pending' AND queue = ? "
            "ORDER BY priority DESC, id LIMIT ?)"
            for _ in params.queues
        )
        sql = f"""
            UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1,
                   worker_id = ?, attempted_at = {NOW}, lease_expires_at = {NOW} + ?
            WHERE id IN (SELECT id FROM ({branches}) ORDER BY priority DESC, id LIMIT ?)
            RETURNING {JOB_COLUMNS}
        """
        args: list[Any] = [params.worker_id, params.lease_seconds]
        for queue in params.queues:
            args += [queue, params.limit]
        args.append(params.limit)
        with self._write(worker=True) as conn:
            self._stage(conn)
            rows = conn.execute(sql, args).fetchall()
        return rows

    @staticmethod
    def _stage(conn: sqlite3.Connection) -> None:
        """Before a claim picks: end expired jobs (and fail their dependents), make due ones pending."""
        expired = [r[0] for r in conn.execute(EXPIRE_DUE).fetchall()]
        if expired:
            graph.resolve(conn, expired)
        conn.execute(STAGE_DUE)

    def explain_claim(self, queues: Sequence[str]) -> str:
        """The query plan of the claim's row selection (read by the plan tests in tests/contract)."""
        rows = self.conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM conveyor_jobs WHERE state = 'pending' AND queue = ? "
            "ORDER BY priority DESC, id LIMIT 10",
            (queues[0],),
        ).fetchall()
        return "\n".join(str(r[-1]) for r in rows)

    def jobs_finish(self, outcomes: Sequence[FinishParams]) -> list[int]:
        if not outcomes:
            return []
        batch = json.dumps(
            [
                [o.lease.job_id, o.lease.token, o.state.value, o.delay, 1 if o.refund else 0, o.result, o.error, o.traceback, o.worker_id]
                for o in outcomes
            ]
        )
        with self._write(worker=True) as conn:
            won_set = self._finish_rows(conn, batch, outcomes)
            won = [o.lease.job_id for o in outcomes if o.lease.job_id in won_set]
            for o in outcomes:
                if o.children and o.lease.job_id in won_set:
                    self._adopt(conn, o)
            woke = graph.resolve(conn, [o.lease.job_id for o in outcomes if o.lease.job_id in won_set and o.state in FINISHED_STATES])
        if woke or any(o.children or o.state is JobState.PENDING for o in outcomes):
            self._notify()
        return won

    @staticmethod
    def _finish_rows(conn: sqlite3.Connection, batch: str, outcomes: Sequence[FinishParams]) -> set[int]:
        """Write the batch; the ids whose lease held. Commonly every lease held, which the count of
        changed rows shows without stepping through a returned row per job (each step hands the GIL
        to the event loop and waits to get it back); otherwise the batch is written again, returning
        the won ids."""
        conn.execute("SAVEPOINT finish")
        if conn.execute(FINISH_JOBS, (batch,)).rowcount == len(outcomes):
            conn.execute("RELEASE finish")
            return {o.lease.job_id for o in outcomes}
        conn.execute("ROLLBACK TO finish")
        won = {row[0] for row in conn.execute(FINISH_JOBS + FINISH_RETURNING, (batch,))}
        conn.execute("RELEASE finish")
        return won

    def _adopt(self, conn: sqlite3.Connection, o: FinishParams) -> None:
        """Insert a completed run's children (see ``adoption``)."""
        root, children = adoption(o)
        if root is not None:
            conn.execute("UPDATE conveyor_jobs SET workflow_id = ? WHERE id = ? AND workflow_id IS NULL", (root, o.lease.job_id))
        self._insert(conn, children)

    def leases_renew(self, leases: Sequence[Lease], seconds: float) -> list[int]:
        held: list[int] = []
        with self._write() as conn:
            for lease in leases:
                row = conn.execute(
                    f"UPDATE conveyor_jobs SET lease_expires_at = {NOW} + ? "
                    "WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING id",
                    (seconds, lease.job_id, lease.token),
                ).fetchone()
                if row is not None:
                    held.append(row[0])
        return held

    def jobs_release(self, leases: Sequence[Lease]) -> int:
        count = 0
        with self._write() as conn:
            for lease in leases:
                count += conn.execute(
                    f"UPDATE conveyor_jobs SET state = 'pending', attempt = attempt - 1, run_at = {NOW}, "
                    "worker_id = NULL, lease_expires_at = NULL WHERE id = ? AND lease_token = ? AND state = 'running'",
                    (lease.job_id, lease.token),
                ).rowcount
        if count:
            self._notify()
        return count

    def jobs_rescue(self, limit: int = 1000) -> list[int]:
        with self._write() as conn:
            rows = conn.execute(RESCUE, (limit,)).fetchall()
            graph.resolve(conn, [r[0] for r in rows if r[1] == "dead"])
            ids = [r[0] for r in rows]
        if ids:
            self._notify()
        return ids

    def job_progress(self, lease: Lease, progress: str) -> bool:
        with self._write() as conn:
            return bool(
                conn.execute(
                    "UPDATE conveyor_jobs SET progress = ? WHERE id = ? AND lease_token = ? AND state = 'running'",
                    (progress, lease.job_id, lease.token),
                ).rowcount
            )

    # -- marks --------------------------------------------------------------------------

    def mark_get(self, job_id: int, key: str) -> tuple[bool, str | None]:
        row = self.conn.execute("SELECT value FROM conveyor_marks WHERE job_id = ? AND key = ?", (job_id, key)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def mark_put(self, lease: Lease, key: str, value: str | None) -> bool:
        with self._write() as conn:
            return bool(
                conn.execute(
                    f"INSERT INTO conveyor_marks (job_id, key, value, created_at) SELECT ?, ?, ?, {NOW} "
                    "WHERE EXISTS (SELECT 1 FROM conveyor_jobs WHERE id = ? AND lease_token = ? AND state = 'running') "
                    "ON CONFLICT (job_id, key) DO NOTHING",
                    (lease.job_id, key, value, lease.job_id, lease.token),
                ).rowcount
            )

    # -- reading and steering -----------------------------------------------------------

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """Rows of a read, driver errors translated, rows with invalid UTF-8 read all the same."""
        def read() -> list[Any]:
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite: {exc}") from exc

        return self._tolerant(read)

    def _tolerant(self, read: Callable[[], list[Any]]) -> list[Any]:
        """``read()``, and if a row holds text that is not UTF-8 (which older versions wrote for a
        lone surrogate) again with such text decoded leniently (U+FFFD), not failing every time.
        Only then: the strict decoder is the driver's fast path."""
        try:
            return read()
        except BackendError as exc:
            if "decode to UTF-8" not in str(exc):
                raise
        conn = self.conn
        conn.text_factory = lenient_text
        try:
            return read()
        finally:
            conn.text_factory = str

    def job_get(self, job_id: int) -> Job | None:
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def jobs_list(self, where: JobFilter, limit: int = 100, before_id: int | None = None) -> list[Job]:
        clause, args = self._where(where)
        if before_id is not None:
            clause += " AND id < ?"
            args.append(before_id)
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE {clause} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [self._job(r) for r in rows]

    def jobs_count(self, where: JobFilter) -> int:
        clause, args = self._where(where)
        return int(self.conn.execute(f"SELECT count(*) FROM conveyor_jobs WHERE {clause}", args).fetchone()[0])

    def jobs_retry(self, where: JobFilter) -> int:
        clause, args = self._where(where)
        with self._write() as conn:
            count = conn.execute(
                f"UPDATE conveyor_jobs SET state = 'pending', attempt = 0, run_at = {NOW}, finished_at = NULL, expires_at = NULL "
                f"WHERE {clause} AND state IN ('dead', 'cancelled', 'expired')",
                args,
            ).rowcount
        if count:
            self._notify()
        return count

    def jobs_cancel(self, where: JobFilter, running: bool = False) -> int:
        clause, args = self._where(where)
        states = "('waiting', 'scheduled', 'pending', 'running')" if running else "('waiting', 'scheduled', 'pending')"
        with self._write() as conn:
            stopped = [r[0] for r in conn.execute(f"SELECT id FROM conveyor_jobs WHERE {clause} AND state = 'running'", args)] if running else []
            rows = conn.execute(
                f"UPDATE conveyor_jobs SET state = 'cancelled', finished_at = {NOW}, worker_id = NULL, lease_expires_at = NULL, "
                f"errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json_object('attempt', attempt, 'at', {NOW}, "
                f"'error', CASE WHEN state = 'running' THEN 'cancelled while running' ELSE 'cancelled' END, 'worker_id', worker_id)) "
                f"WHERE {clause} AND state IN {states} RETURNING id",
                args,
            ).fetchall()
            graph.resolve(conn, [r[0] for r in rows])
        if stopped:
            for callback in list(self._cancel_listeners):
                callback(stopped)
        return len(rows)

    def jobs_run_now(self, job_id: int) -> bool:
        with self._write() as conn:
            moved = conn.execute(
                f"UPDATE conveyor_jobs SET state = 'pending', run_at = {NOW} WHERE id = ? AND state = 'scheduled'", (job_id,)
            ).rowcount
        if moved:
            self._notify()
        return bool(moved)

    # -- queues -------------------------------------------------------------------------

    def queue_pause(self, queue: str, paused: bool) -> bool:
        with self._write() as conn:
            if paused:
                sql = f"INSERT INTO conveyor_queue_pauses (queue, paused_at) VALUES (?, {NOW}) ON CONFLICT (queue) DO NOTHING"
            else:
                sql = "DELETE FROM conveyor_queue_pauses WHERE queue = ?"
            changed = bool(conn.execute(sql, (queue,)).rowcount)
        if changed and not paused:
            self._notify()
        return changed

    def queues_paused(self) -> dict[str, datetime]:
        return {q: from_epoch(at) for q, at in self.conn.execute("SELECT queue, paused_at FROM conveyor_queue_pauses")}

    def jobs_purge(self, where: JobFilter) -> int:
        clause, args = self._where(where)
        with self._write() as conn:
            conn.execute(
                f"DELETE FROM conveyor_marks WHERE job_id IN (SELECT id FROM conveyor_jobs WHERE {clause} AND state IN {FINISHED})",
                args,
            )
            return conn.execute(f"DELETE FROM conveyor_jobs WHERE {clause} AND state IN {FINISHED}", args).rowcount

    @staticmethod
    def _where(f: JobFilter) -> tuple[str, list[Any]]:
        """A WHERE clause whose values are all bound parameters, never SQL text."""
        parts = ["1 = 1"]
        args: list[Any] = []
        for column, values in (("state", [s.value for s in f.states]), ("queue", f.queues), ("type", f.types), ("id", f.ids)):
            if values:
                parts.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if f.workflow_id is not None:
            parts.append("workflow_id = ?")
            args.append(f.workflow_id)
        if f.created_after is not None:
            parts.append("created_at >= ?")
            args.append(to_epoch(f.created_after))
        if f.created_before is not None:
            parts.append("created_at < ?")
            args.append(to_epoch(f.created_before))
        return " AND ".join(parts), args

    # -- workflows ----------------------------------------------------------------------

    def workflow_jobs(self, workflow_id: str, limit: int = 100_000) -> list[Job]:
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE workflow_id = ? ORDER BY id LIMIT ?", (workflow_id, limit))
        return [self._job(r) for r in rows]

    def job_edges(self, job_ids: Sequence[int]) -> list[tuple[int, int, bool]]:
        return graph.edges(self.conn, job_ids)

    def parent_results(self, job_id: int) -> list[tuple[int, str, str, Any]]:
        return graph.parent_results(self.conn, job_id)

    def workflow_retry(self, workflow_id: str) -> int:
        with self._write() as conn:
            count = graph.retry_workflow(conn, workflow_id)
        self._notify()
        return count

    # -- flow control and schedules (conveyor/backends/sqlite/flow.py) -------------------

    def _claim_flow(self, params: ClaimParams) -> list[Any]:
        with self._write() as conn:
            self._stage(conn)
            return flow.claim(conn, params)

    def schedules_sync(self, schedules: Sequence[NewSchedule], owned_types: Sequence[str] | None) -> None:
        """Write declared schedules. ``owned_types`` (the syncing app's job types): update rows and
        disable the rows of those types no longer declared; None: only add missing rows."""
        with self._write() as conn:
            flow.schedules_sync(conn, schedules, owned_types)

    def schedules_list(self) -> list[Schedule]:
        return flow.schedules_list(self.conn)

    def schedules_due(self) -> tuple[datetime, list[Schedule]]:
        return flow.schedules_due(self.conn)

    def schedule_fire(self, params: FireParams) -> list[int] | None:
        with self._write() as conn:
            ids = flow.schedule_fire(conn, params, self._insert)
        if ids:
            self._notify()
        return ids

    def schedule_set(self, name: str, paused: bool, next_fire_at: datetime | None = None) -> bool:
        with self._write() as conn:
            return flow.schedule_set(conn, name, paused, next_fire_at)

    def schedule_put(self, schedule: NewSchedule, create: bool) -> bool:
        with self._write() as conn:
            return flow.schedule_put(conn, schedule, create)

    def schedule_remove(self, name: str) -> bool:
        with self._write() as conn:
            return flow.schedule_remove(conn, name)

    # -- workers ------------------------------------------------------------------------

    def workers_heartbeat(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                f"""INSERT INTO conveyor_workers (id, host, pid, queues, concurrency, running, started_at, heartbeat_at, meta)
                    VALUES (?, ?, ?, ?, ?, ?, {NOW}, {NOW}, ?)
                    ON CONFLICT (id) DO UPDATE SET running = excluded.running, heartbeat_at = excluded.heartbeat_at,
                                                   meta = excluded.meta""",
                (info.id, info.host, info.pid, json.dumps(list(info.queues)), info.concurrency, info.running, json.dumps(info.meta)),
            )

    def workers_remove(self, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM conveyor_workers WHERE id = ?", (worker_id,))

    def workers_list(self) -> list[WorkerInfo]:
        rows = self.conn.execute(
            "SELECT id, host, pid, queues, concurrency, running, started_at, heartbeat_at, meta FROM conveyor_workers ORDER BY started_at"
        ).fetchall()
        return [
            WorkerInfo(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], from_epoch(r[6]), from_epoch(r[7]), json.loads(r[8]))
            for r in rows
        ]

    # -- waking -------------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Wake ``callback`` when jobs may be due: at once for an enqueue from this process, and
        within ``WATCH_INTERVAL`` for a commit from any other process (``PRAGMA data_version``)."""
        return self._listeners.add(callback)

    def listen_finished(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Wake ``callback`` when jobs may have finished: the same change watch as ``listen``. Returns
        once the watcher has taken its baseline, so a commit after this call cannot go unseen."""
        stop = self.listen(callback)
        with self._watch_turn:
            seen = self._watch_rounds
            self._watch_turn.notify_all()  # an idle watcher looks again at once
            if not self._watch_turn.wait_for(lambda: self._watch_rounds >= seen + 2, timeout=self.busy_timeout):
                stop()
                raise BackendError(f"SQLite: the change watch on {self.path} did not start")
        return stop

    def listen_cancel(self, callback: Callable[[list[int]], None]) -> Callable[[], None]:
        """Tell ``callback`` the ids of running jobs cancelled from this process at once; a cancel
        from another process reaches the holding worker with its next lease renewal."""
        with self._lock:
            self._cancel_listeners.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._cancel_listeners:
                    self._cancel_listeners.remove(callback)

        return stop

    def _watch(self) -> None:
        """Poll the file's commit counter: a few microseconds every few milliseconds, no write lock."""
        conn: sqlite3.Connection | None = None
        seen = None
        while not self._closing.is_set():
            if not self._listeners:
                seen = None
                with self._watch_turn:
                    self._watch_turn.wait(0.1)
                continue
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
                version = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                conn = None
                self._closing.wait(0.5)
                continue
            if seen is not None and version != seen:
                self._notify()
            seen = version
            with self._watch_turn:
                self._watch_rounds += 1
                self._watch_turn.notify_all()
            self._closing.wait(WATCH_INTERVAL)
        if conn is not None:
            conn.close()

    def _notify(self) -> None:
        self._listeners.wake()

    # -- rows ---------------------------------------------------------------------------

    @staticmethod
    def _job(r: Sequence[Any], at: Callable[[float], datetime] = from_epoch) -> Job:
        try:
            return SQLiteBackend._read_job(r, at)
        except (ValueError, OverflowError, OSError, RecursionError, TypeError):
            return salvaged_job(r, decoded=False, at=at)  # a time out of range, or JSON too deep: read it value by value

    @staticmethod
    def _read_job(r: Sequence[Any], at: Callable[[float], datetime]) -> Job:
        cols = read_json_columns(r[4], r[19], r[20], r[21])
        state, odd_state = read_state(r[3])
        corrupt = corrupt_reason(cols.corrupt, odd_state)
        return job_from_fields((
            r[0], r[1], r[2], state, cols.payload, r[5], r[6], r[7], at(r[8]), at(r[9]),
            None if r[10] is None else at(r[10]),
            None if r[11] is None else at(r[11]),
            r[12],
            None if r[13] is None else at(r[13]),
            r[14], r[15], r[16], r[17], r[18], cols.progress, cols.result, cols.errors, r[22],
            None if r[24] is None else at(r[24]), corrupt, read_meta(r[23]),
        ))  # fmt: skip


def lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction; one SQLite already rolled back (after an I/O error) is fine."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def split_statements(script: str) -> Iterator[str]:
    """Split a migration into statements (sqlite3 runs one at a time inside a transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()
