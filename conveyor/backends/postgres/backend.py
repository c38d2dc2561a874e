"""PostgresBackend: the shared store for many machines (psycopg 3, a pool, SKIP LOCKED, LISTEN/NOTIFY)."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

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
    Salvaged,
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
from conveyor.backends.postgres import flow, graph
from conveyor.backends.postgres.hints import ClaimHints
from conveyor.backends.postgres.rows import fetch_rows
from conveyor.errors import BackendError, BackendUnavailable, ConfigError
from conveyor.job import FINISHED_STATES, Job, JobState, job_from_fields

log = logging.getLogger("conveyor.postgres")

CHANNEL = "conveyor_jobs"  # plus a hash of the schema: apps in other schemas do not wake each other
DONE_SUFFIX = "_done"  # the channel on which finishing transactions tell result waiters to look
CANCEL_SUFFIX = "_cancel"  # the ids of running jobs just cancelled, for the workers that hold them
MIGRATION_LOCK = 7_261_001  # pg_advisory_xact_lock key that serialises concurrent migrators
FINISHED = FINISHED_SQL
UNFINISHED = "waiting,scheduled,pending,running"
J_COLUMNS = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))

INSERT_JOBS = """
INSERT INTO conveyor_jobs (type, queue, state, payload, priority, max_attempts, run_at, created_at,
                           timeout, backoff, unique_key, unique_until, workflow_id, parent_id, meta, expires_at)
SELECT r.type, r.queue,
       CASE WHEN r.initial IS NOT NULL THEN r.initial WHEN r.at > now() THEN 'scheduled' ELSE 'pending' END, r.payload::jsonb,
       r.priority, r.max_attempts, r.at, now(), r.timeout, r.backoff, r.unique_key,
       CASE WHEN r.unique_for IS NULL THEN NULL ELSE now() + make_interval(secs => r.unique_for) END,
       r.workflow_id, r.parent_id, r.meta::jsonb,
       coalesce(to_timestamp(r.expires_at), now() + make_interval(secs => r.expires_in))
FROM (
    SELECT u.*, coalesce(to_timestamp(u.run_at), now() + make_interval(secs => u.delay)) AS at
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::int4[], %b::int4[], %b::float8[], %b::float8[],
                %b::float8[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::int8[], %b::text[], %b::text[],
                %b::float8[], %b::float8[])
         WITH ORDINALITY AS u(type, queue, payload, priority, max_attempts, delay, run_at,
                              timeout, backoff, unique_key, unique_for, workflow_id, parent_id, meta, initial,
                              expires_at, expires_in, ord)
) AS r
ORDER BY r.ord
{on_conflict}
RETURNING id, unique_key, state, queue, priority
"""
"""One array per column, in binary (the text format escapes each element in Python, ~7 µs a
payload). A column no job sets is sent as NULL, which unnest pads with NULLs like a short array.
The ON CONFLICT clause only when some job has a unique key: it makes each row a speculative
insertion (an extra WAL record), and NULL keys never conflict."""

INSERT_AND_NOTIFY = """
WITH inserted AS ({insert}),
woken AS (SELECT pg_notify(%b, r.queue || E'\t' || r.priority || E'\t' || r.id)
          FROM (SELECT DISTINCT ON (queue) queue, priority, id FROM inserted WHERE state = 'pending'
                ORDER BY queue, priority DESC, id) AS r)
SELECT i.* FROM inserted AS i, (SELECT count(*) FROM woken) AS w
"""
"""The insert and the NOTIFY of each queue that got a ready job, in one statement: with no
unique key and no dependency to check first, a lone statement in autocommit is the whole
transaction, so an enqueue is one round trip (it was four: BEGIN, INSERT, NOTIFY, COMMIT).
The count over ``woken`` makes it run (a CTE nobody reads is skipped). Each queue's NOTIFY
names its first ready job (``hints.ready_payload``'s format) so listening workers lower their claim
hint to it instead of dropping it."""
ON_CONFLICT = "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING"

RELEASE_UNIQUE = """
UPDATE conveyor_jobs j SET unique_key = NULL FROM unnest(%s::text[], %s::text[]) AS k(key, states)
WHERE j.unique_key = k.key AND (j.unique_until <= now() OR NOT (j.state = ANY(string_to_array(k.states, ','))))
"""
"""A key stops blocking once its holder's window ran out or the holder left the blocking states."""

REPLACE_UNIQUE = """
UPDATE conveyor_jobs SET payload = %(payload)s::jsonb, priority = %(priority)s, run_at = r.at,
       state = CASE WHEN r.at > now() THEN 'scheduled' ELSE 'pending' END
FROM (SELECT coalesce(to_timestamp(%(run_at)s::float8), now() + make_interval(secs => %(delay)s::float8)) AS at) AS r
WHERE unique_key = %(unique_key)s AND state IN ('scheduled', 'pending')
RETURNING state, queue
"""
"""Debounce: the not-yet-started holder of the key takes the new payload and run time."""

EXPIRE_DUE = """
UPDATE conveyor_jobs j SET state = 'expired', finished_at = now(), unique_key = NULL,
    errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt, 'at', extract(epoch FROM now()),
        'error', 'expired: not started before its expiry'))
WHERE j.id IN (SELECT id FROM conveyor_jobs WHERE expires_at IS NOT NULL AND state IN ('waiting', 'scheduled', 'pending')
               AND expires_at <= now() LIMIT 1000 FOR UPDATE SKIP LOCKED)
RETURNING j.id
"""
"""Unstarted jobs past their expiry end, in every claim before it picks: an expired job never runs."""

STAGE_DUE = """
WITH staged AS (
    UPDATE conveyor_jobs SET state = 'pending'
    WHERE id IN (SELECT id FROM conveyor_jobs WHERE state = 'scheduled' AND run_at <= now()
                 ORDER BY run_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT pg_notify(%s, ''), set_config('conveyor.staged', 'yes', true) FROM (SELECT 1 FROM staged LIMIT 1) AS any_staged
"""
"""Due jobs become pending with the ids they were enqueued with, behind every claim hint: the
claim in the same transaction then reads from each queue's start (the transaction-local
``conveyor.staged``), and the empty NOTIFY clears every process's hints (hints.py) and wakes
idle workers for them."""

CLAIM_JOBS = f"""
WITH q AS (
    SELECT name, CASE WHEN staged THEN 2147483648 ELSE hp END AS hp, CASE WHEN staged THEN 0 ELSE hid END AS hid
    FROM unnest(%(queues)s::text[], %(hp)s::int8[], %(hid)s::int8[]) AS q(name, hp, hid),
         (SELECT current_setting('conveyor.staged', true) IS NOT DISTINCT FROM 'yes' AS staged) AS s),
after_hint AS (
    SELECT c.id, c.priority FROM q, LATERAL (
        SELECT id, priority FROM conveyor_jobs
        WHERE state = 'pending' AND queue = q.name AND priority = q.hp AND id > q.hid
        ORDER BY priority DESC, id LIMIT %(n)s FOR UPDATE SKIP LOCKED) AS c),
lower AS (
    SELECT c.id, c.priority FROM q, LATERAL (
        SELECT id, priority FROM conveyor_jobs
        WHERE state = 'pending' AND queue = q.name AND priority < q.hp
        ORDER BY priority DESC, id LIMIT %(n)s - (SELECT count(*) FROM after_hint) FOR UPDATE SKIP LOCKED) AS c),
picked AS (
    SELECT id FROM (SELECT * FROM after_hint UNION ALL SELECT * FROM lower) AS u
    ORDER BY priority DESC, id LIMIT %(n)s)
UPDATE conveyor_jobs j SET state = 'running', attempt = j.attempt + 1, lease_token = j.lease_token + 1,
       worker_id = %(worker)s, attempted_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM picked
WHERE j.id = picked.id
RETURNING {J_COLUMNS}
"""
"""The plain claim (no flow control): per queue, the rest of the hinted priority from just after
the hinted id, then the lower priorities, for as many slots as the first range left; the
cost stays that of the top rows however many jobs wait in other queues, lie finished in the
table, or left dead entries behind the hint (hints.py). Without a hint (priority 2^31) the
first range is empty and the second reads the whole queue from its start."""

FINISH_JOBS = f"""
UPDATE conveyor_jobs j SET
    state = CASE WHEN o.state = 'pending' AND o.delay > 0 THEN 'scheduled' ELSE o.state END,
    run_at = CASE WHEN o.state = 'pending' THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
    finished_at = CASE WHEN o.state IN {FINISHED} THEN now() ELSE NULL END,
    attempt = j.attempt - o.refund,
    result = o.result::jsonb,
    errors = CASE WHEN o.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt, 'at', extract(epoch FROM now()), 'error', o.error,
        'traceback', o.traceback, 'worker_id', o.worker_id)) END,
    worker_id = NULL,
    lease_expires_at = NULL
FROM unnest(%s::int8[], %s::int8[], %s::text[], %s::float8[], %s::int4[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS o(id, token, state, delay, refund, result, error, traceback, worker_id)
WHERE j.id = o.id AND j.lease_token = o.token AND coalesce(j.state, '') = 'running'
RETURNING j.id
"""
"""Every outcome of a batch in one statement (one round trip), each fenced by its lease token.

``coalesce`` hides the state test from the planner: a bitmap scan of the running-jobs index
would visit every entry that index collected since the last vacuum; the primary key never does."""

RESCUE = """
UPDATE conveyor_jobs j SET
    state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() ELSE NULL END,
    run_at = now(),
    errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt, 'at', extract(epoch FROM now()),
        'error', 'worker lost: its lease expired before the run finished', 'worker_id', j.worker_id)),
    worker_id = NULL,
    lease_expires_at = NULL
FROM (SELECT id FROM conveyor_jobs WHERE state = 'running' AND lease_expires_at <= now()
      LIMIT %s FOR UPDATE SKIP LOCKED) AS lost
WHERE j.id = lost.id
RETURNING j.id, j.state, j.queue
"""


def set_or_null(column: list[Any]) -> list[Any] | None:
    """A column's array for INSERT_JOBS, or NULL when no job sets it."""
    return None if column.count(None) == len(column) else column


class PostgresBackend:
    """Many workers on many machines share one PostgreSQL database.

    Claims lock with ``FOR UPDATE SKIP LOCKED`` so workers never wait on each other;
    enqueues NOTIFY in their own transaction and idle workers LISTEN, with a poll behind it.

    Connections: at most ``pool_size`` for the work, plus one for LISTEN once something listens
    (a worker). ``pooler="transaction"``: ``url`` goes through a transaction-mode pooler such as
    PgBouncer, so no statement is prepared on the server (a prepared statement lives in one
    server session, and the next transaction may get another); LISTEN, which needs a session of
    its own, uses ``listen_url`` (a direct connection to the same database and schema), or,
    without one, nothing listens and workers poll every ``poll_interval``.
    """

    flavour = "postgres"

    def __init__(
        self,
        url: str,
        pool_size: int = 10,
        timeout: float = 30.0,
        pooler: str | None = None,
        listen_url: str | None = None,
    ) -> None:
        if pooler not in (None, "", "none", "transaction"):
            raise ConfigError("db_pooler", f"unknown pooler mode {pooler!r}: use 'transaction' (PgBouncer's pool_mode) or leave it unset")
        self.url = url
        self.timeout = timeout
        self.pooled = pooler == "transaction"
        self.listen_url = listen_url or (None if self.pooled else url)
        kwargs: dict[str, Any] = {"autocommit": False}
        if self.pooled:
            kwargs["prepare_threshold"] = None
        try:
            self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, kwargs=kwargs, name="conveyor")
            self.pool.open(wait=False)
        except psycopg.Error as exc:
            raise BackendUnavailable(f"PostgreSQL: {exc}") from exc
        self._listeners = Listeners("conveyor-listen", self._listen_loop)
        self._finished: list[Callable[[], None]] = []  # result waiters, woken by the same LISTEN thread
        self._cancels: list[Callable[[list[int]], None]] = []  # workers, told the ids of running jobs cancelled
        self._listening = threading.Event()  # the LISTEN connection is up: no notification is missed from now on
        self._closing = threading.Event()
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._hints = ClaimHints()
        self.channel = CHANNEL

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in one transaction, driver errors translated."""
        if not self._migrated:
            self.migrate()
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL: {exc}") from exc
        except TimeoutError as exc:  # psycopg_pool.PoolTimeout
            raise BackendUnavailable(f"PostgreSQL: no connection within {self.timeout:g} s: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction; pass it as ``connection=``."""
        with self._conn() as conn:
            yield conn

    def close(self) -> None:
        self._closing.set()
        listening = self._listeners.detach()
        if listening is not None:
            listening.join(timeout=5)
        self.pool.close()

    def now(self) -> datetime:
        with self._conn() as conn:
            row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

    # -- migrations ---------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply missing migrations (an advisory lock serialises processes, a thread lock this
        one's threads); the database counts as migrated only once they are committed."""
        with self._migrate_lock:
            applied = self._migrate()
            self._migrated = True
        return applied

    def _migrate(self) -> list[int]:
        applied: list[int] = []
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                schema = conn.execute("SELECT current_schema()").fetchone()
                self.channel = f"{CHANNEL}_{hashlib.sha1(str(schema and schema[0]).encode()).hexdigest()[:12]}"
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS conveyor_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM conveyor_migrations")}
                for migration in migrate.load(self.flavour):
                    if migration.version in done:
                        continue
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO conveyor_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
                    )
                    applied.append(migration.version)
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL migration failed: {exc}") from exc
        except TimeoutError as exc:  # psycopg_pool.PoolTimeout
            raise BackendUnavailable(f"PostgreSQL: no connection within {self.timeout:g} s: {exc}") from exc
        return applied

    def migrations_applied(self) -> list[int]:
        with self._conn() as conn:
            return [r[0] for r in conn.execute("SELECT version FROM conveyor_migrations ORDER BY version")]

    # -- enqueue ------------------------------------------------------------------------

    def jobs_insert(self, jobs: Sequence[NewJob], connection: Any = None) -> list[Inserted]:
        if not jobs:
            return []
        if connection is not None:
            try:
                return self._insert(connection, jobs)
            except psycopg.Error as exc:
                raise BackendError(f"PostgreSQL: {exc}") from exc
        with self._conn() as conn:
            if any(j.unique_key is not None or j.depends_on for j in jobs):
                return self._insert(conn, jobs)
            conn.autocommit = True  # one statement (INSERT_AND_NOTIFY) is its own transaction
            try:
                return self._insert_bulk(conn, jobs)
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def _insert(self, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]) -> list[Inserted]:
        """Bulk-insert runs of independent jobs; a job with dependencies goes alone, after its parents."""
        if not any(j.depends_on for j in jobs):
            return self._insert_bulk(conn, jobs)
        out: list[Inserted] = []
        run: list[NewJob] = []
        for job in jobs:
            if not job.depends_on:
                run.append(job)
                continue
            if run:
                out += self._insert_bulk(conn, run)
                run = []
            parents = dependency_ids(job, out)
            initial = initial_state(job, parents, graph.parent_states(conn, parents))
            (inserted,) = self._insert_bulk(conn, [job], initial)
            if not inserted.existing:
                graph.add_edges(conn, inserted.id, job, parents, initial)
            out.append(inserted)
        if run:
            out += self._insert_bulk(conn, run)
        return out

    def _insert_bulk(self, conn: psycopg.Connection[Any], jobs: Sequence[NewJob], initial: str | None = None) -> list[Inserted]:
        keyed = [j for j in jobs if j.unique_key is not None]
        keys = [j.unique_key for j in keyed]
        if keyed:
            states = [UNFINISHED if j.unique_states is None else ",".join(j.unique_states) for j in keyed]
            conn.execute(RELEASE_UNIQUE, (keys, states))
        rows = conn.execute(
            INSERT_AND_NOTIFY.format(insert=INSERT_JOBS.format(on_conflict=ON_CONFLICT if keys else "")),
            (
                [j.type for j in jobs],
                [j.queue for j in jobs],
                [j.payload for j in jobs],
                [j.priority for j in jobs],
                [j.max_attempts for j in jobs],
                [j.delay for j in jobs],
                set_or_null([j.run_at for j in jobs]),
                set_or_null([j.timeout for j in jobs]),
                set_or_null([j.backoff for j in jobs]),
                set_or_null([j.unique_key for j in jobs]),
                set_or_null([j.unique_for for j in jobs]),
                set_or_null([j.workflow_id for j in jobs]),
                set_or_null([j.parent_id for j in jobs]),
                set_or_null([j.meta for j in jobs]),
                None if initial is None else [initial] * len(jobs),
                set_or_null([j.expires_at for j in jobs]),
                set_or_null([j.expires_in for j in jobs]),
                self.channel,
            ),
        ).fetchall()
        if len(rows) < len(jobs):  # debounce: holders that take the new payload move in claim order, so every hint is cleared
            replaced = self._replace_held(conn, jobs, {r[1] for r in rows if r[1] is not None})
            if any(r[2] == "pending" for r in replaced):
                conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        if len(rows) == len(jobs):  # nothing deduplicated: ids follow the insert order
            return [Inserted(r[0]) for r in sorted(rows)]
        return self._match_inserted(conn, jobs, rows)

    @staticmethod
    def _replace_held(conn: psycopg.Connection[Any], jobs: Sequence[NewJob], fresh: set[str]) -> list[Any]:
        """Debounce the deduplicated jobs that ask for it; rows shaped like the insert's, for its notify only."""
        woke = []
        for job in jobs:
            if job.replace and job.unique_key is not None and job.unique_key not in fresh:
                row = conn.execute(REPLACE_UNIQUE, {"payload": job.payload, "priority": job.priority, "run_at": job.run_at,
                                                    "delay": job.delay, "unique_key": job.unique_key}).fetchone()
                if row is not None:
                    woke.append((None, None, row[0], row[1]))
        return woke

    @staticmethod
    def _match_inserted(conn: psycopg.Connection[Any], jobs: Sequence[NewJob], rows: list[Any]) -> list[Inserted]:
        """Give each NewJob its id when some were deduplicated by their unique key."""
        new_ids = iter(sorted(r[0] for r in rows))
        fresh_keys = {r[1] for r in rows if r[1] is not None}
        existing = dict(
            conn.execute(
                "SELECT unique_key, id FROM conveyor_jobs WHERE unique_key = ANY(%s)",
                ([j.unique_key for j in jobs if j.unique_key is not None],),
            ).fetchall()
        )
        out: list[Inserted] = []
        for job in jobs:
            if job.unique_key is None:
                out.append(Inserted(next(new_ids)))
            elif job.unique_key in fresh_keys:
                fresh_keys.discard(job.unique_key)
                out.append(Inserted(next(new_ids)))
            else:
                out.append(Inserted(existing[job.unique_key], existing=True))
        return out

    # -- the life of a run --------------------------------------------------------------

    def jobs_claim(self, params: ClaimParams) -> list[Job]:
        return self.read_claimed(self.jobs_claim_rows(params))

    def read_claimed(self, rows: Sequence[Any]) -> list[Job]:
        """Claimed rows as Jobs, in claim order. Apart from the claim so that a worker reads them on
        its event loop while its database thread goes on to the next transaction."""
        return claimed(rows, self._job)

    def jobs_claim_rows(self, params: ClaimParams) -> list[Any]:
        """The claim's transaction; its rows as the driver returns them (see ``read_claimed``)."""
        if params.limits or params.types or params.aging:
            return self._claim_flow(params)
        priorities, ids, version = self._hints.plan(params.queues)
        args = {"queues": list(params.queues), "hp": priorities, "hid": ids, "n": params.limit,
                "worker": params.worker_id, "lease": params.lease_seconds}  # fmt: skip
        with self._conn() as conn:
            with conn.pipeline():  # BEGIN, stage and claim in one round trip
                expired = conn.execute(EXPIRE_DUE)
                conn.execute(STAGE_DUE, (self.channel,))
                cur = conn.execute(CLAIM_JOBS, args)
            rows = fetch_rows(cur)
            self._expired(conn, expired)
        self._hints.advance(((r[2], r[5], r[0]) for r in rows), version)
        return rows

    def _expired(self, conn: psycopg.Connection[Any], expired: psycopg.Cursor[Any]) -> None:
        """Fail the dependents of jobs the claim's transaction just expired (rarely any)."""
        ids = [r[0] for r in expired.fetchall()]
        if ids:
            graph.resolve(conn, ids, self.channel + DONE_SUFFIX)

    def explain_claim(self, queues: Sequence[str]) -> str:
        """The query plan of the claim's row selection (read by the plan tests in tests/contract)."""
        with self._conn() as conn:
            rows = conn.execute(
                "EXPLAIN SELECT c.id FROM unnest(%s::text[]) AS q(name), LATERAL (SELECT id, priority FROM conveyor_jobs "
                "WHERE state = 'pending' AND queue = q.name ORDER BY priority DESC, id LIMIT 10 FOR UPDATE SKIP LOCKED) AS c",
                (list(queues),),
            ).fetchall()
        return "\n".join(r[0] for r in rows)

    def analyze(self) -> None:
        """Refresh planner statistics (after bulk loads in tests and benchmarks)."""
        with self._conn() as conn:
            conn.execute("ANALYZE conveyor_jobs")

    def jobs_finish(self, outcomes: Sequence[FinishParams]) -> list[int]:
        if not outcomes:
            return []
        with self._conn() as conn:
            won_set = {
                row[0]
                for row in conn.execute(
                    FINISH_JOBS,
                    (
                        [o.lease.job_id for o in outcomes],
                        [o.lease.token for o in outcomes],
                        [o.state.value for o in outcomes],
                        [float(o.delay) for o in outcomes],
                        [1 if o.refund else 0 for o in outcomes],
                        [o.result for o in outcomes],
                        [o.error for o in outcomes],
                        [o.traceback for o in outcomes],
                        [o.worker_id for o in outcomes],
                    ),
                )
            }
            for o in outcomes:
                if o.children and o.lease.job_id in won_set:
                    self._adopt(conn, o)
            finished = [o.lease.job_id for o in outcomes if o.lease.job_id in won_set and o.state in FINISHED_STATES]
            woke = graph.resolve(conn, finished, self.channel + DONE_SUFFIX)
            if woke or any(o.state is JobState.PENDING and o.delay <= 0 for o in outcomes):
                conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return [o.lease.job_id for o in outcomes if o.lease.job_id in won_set]

    def _adopt(self, conn: psycopg.Connection[Any], o: FinishParams) -> None:
        """Insert a completed run's children (see ``adoption``)."""
        root, children = adoption(o)
        if root is not None:
            conn.execute("UPDATE conveyor_jobs SET workflow_id = %s WHERE id = %s AND workflow_id IS NULL", (root, o.lease.job_id))
        self._insert(conn, children)

    def leases_renew(self, leases: Sequence[Lease], seconds: float) -> list[int]:
        if not leases:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "UPDATE conveyor_jobs j SET lease_expires_at = now() + make_interval(secs => %s) "
                "FROM unnest(%s::int8[], %s::int8[]) AS l(id, token) "
                "WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running' RETURNING j.id",
                (seconds, [x.job_id for x in leases], [x.token for x in leases]),
            ).fetchall()
        return [r[0] for r in rows]

    def jobs_release(self, leases: Sequence[Lease]) -> int:
        if not leases:
            return 0
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE conveyor_jobs j SET state = 'pending', attempt = j.attempt - 1, run_at = now(), "
                "worker_id = NULL, lease_expires_at = NULL FROM unnest(%s::int8[], %s::int8[]) AS l(id, token) "
                "WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'",
                ([x.job_id for x in leases], [x.token for x in leases]),
            )
            if cur.rowcount:
                conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
            return cur.rowcount

    def jobs_rescue(self, limit: int = 1000) -> list[int]:
        with self._conn() as conn:
            rows = conn.execute(RESCUE, (limit,)).fetchall()
            woke = graph.resolve(conn, [r[0] for r in rows if r[1] == "dead"], self.channel + DONE_SUFFIX)
            if woke or any(r[1] == "pending" for r in rows):
                conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return [r[0] for r in rows]

    def job_progress(self, lease: Lease, progress: str) -> bool:
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE conveyor_jobs SET progress = %s::jsonb WHERE id = %s AND lease_token = %s AND state = 'running'",
                (progress, lease.job_id, lease.token),
            )
            return bool(cur.rowcount)

    # -- marks --------------------------------------------------------------------------

    def mark_get(self, job_id: int, key: str) -> tuple[bool, str | None]:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT value::text FROM conveyor_marks WHERE job_id = %s AND key = %s", (job_id, key)
            ).fetchone()
        return (False, None) if row is None else (True, row[0])

    def mark_put(self, lease: Lease, key: str, value: str | None) -> bool:
        with self._conn() as conn:
            cur = conn.execute(
                "INSERT INTO conveyor_marks (job_id, key, value, created_at) SELECT %s, %s, %s::jsonb, now() "
                "WHERE EXISTS (SELECT 1 FROM conveyor_jobs WHERE id = %s AND lease_token = %s AND state = 'running') "
                "ON CONFLICT (job_id, key) DO NOTHING",
                (lease.job_id, key, value, lease.job_id, lease.token),
            )
            return bool(cur.rowcount)

    # -- reading and steering -----------------------------------------------------------

    def job_get(self, job_id: int) -> Job | None:
        with self._conn() as conn:
            rows = fetch_rows(conn.execute(f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = %s", (job_id,)))
        return self._job(rows[0]) if rows else None

    def jobs_list(self, where: JobFilter, limit: int = 100, before_id: int | None = None) -> list[Job]:
        clause, args = self._where(where)
        if before_id is not None:
            clause += " AND id < %s"
            args.append(before_id)
        with self._conn() as conn:
            rows = fetch_rows(conn.execute(
                f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE {clause} ORDER BY id DESC LIMIT %s", (*args, limit)
            ))
        return [self._job(r) for r in rows]

    def jobs_count(self, where: JobFilter) -> int:
        clause, args = self._where(where)
        with self._conn() as conn:
            row = conn.execute(f"SELECT count(*) FROM conveyor_jobs WHERE {clause}", args).fetchone()
        assert row is not None
        return int(row[0])

    def jobs_retry(self, where: JobFilter) -> int:
        clause, args = self._where(where)
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE conveyor_jobs SET state = 'pending', attempt = 0, run_at = now(), finished_at = NULL, expires_at = NULL "
                f"WHERE {clause} AND state IN ('dead', 'cancelled', 'expired')",
                args,
            )
            if cur.rowcount:
                conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
            return cur.rowcount

    def jobs_cancel(self, where: JobFilter, running: bool = False) -> int:
        clause, args = self._where(where)
        states = "('waiting', 'scheduled', 'pending', 'running')" if running else "('waiting', 'scheduled', 'pending')"
        with self._conn() as conn:
            rows = conn.execute(
                "UPDATE conveyor_jobs j SET state = 'cancelled', finished_at = now(), worker_id = NULL, lease_expires_at = NULL, "
                "errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt, 'at', extract(epoch FROM now()), "
                "'error', CASE WHEN old.state = 'running' THEN 'cancelled while running' ELSE 'cancelled' END, 'worker_id', old.worker_id)) "
                f"FROM (SELECT id, state, worker_id FROM conveyor_jobs WHERE {clause} AND state IN {states} FOR UPDATE) AS old "
                "WHERE j.id = old.id RETURNING j.id, old.state",
                args,
            ).fetchall()
            ids = [r[0] for r in rows]
            if graph.resolve(conn, ids):
                conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
            stopped = [r[0] for r in rows if r[1] == "running"]
            if stopped:  # the workers holding them stop the runs at once (their heartbeat would, later)
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel + CANCEL_SUFFIX, ",".join(map(str, stopped))[:7000]))
            if rows:
                conn.execute("SELECT pg_notify(%s, '')", (self.channel + DONE_SUFFIX,))
        return len(rows)

    def jobs_run_now(self, job_id: int) -> bool:
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE conveyor_jobs SET state = 'pending', run_at = now() WHERE id = %s AND state = 'scheduled' RETURNING queue",
                (job_id,),
            )
            row = cur.fetchone()
            if row is not None:
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, row[0]))
            return row is not None

    # -- queues -------------------------------------------------------------------------

    def queue_pause(self, queue: str, paused: bool) -> bool:
        with self._conn() as conn:
            if paused:
                sql = "INSERT INTO conveyor_queue_pauses (queue) VALUES (%s) ON CONFLICT (queue) DO NOTHING"
            else:
                sql = "DELETE FROM conveyor_queue_pauses WHERE queue = %s"
            changed = bool(conn.execute(sql, (queue,)).rowcount)
            if changed and not paused:
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
            return changed

    def queues_paused(self) -> dict[str, datetime]:
        with self._conn() as conn:
            return dict(conn.execute("SELECT queue, paused_at FROM conveyor_queue_pauses").fetchall())

    def jobs_purge(self, where: JobFilter) -> int:
        clause, args = self._where(where)
        with self._conn() as conn:
            conn.execute(
                "DELETE FROM conveyor_marks WHERE job_id IN "
                f"(SELECT id FROM conveyor_jobs WHERE {clause} AND state IN {FINISHED})",
                args,
            )
            return conn.execute(f"DELETE FROM conveyor_jobs WHERE {clause} AND state IN {FINISHED}", args).rowcount

    @staticmethod
    def _where(f: JobFilter) -> tuple[str, list[Any]]:
        """A WHERE clause whose values are all bound parameters, never SQL text."""
        parts = ["true"]
        args: list[Any] = []
        for column, values, cast in (
            ("state", [s.value for s in f.states], "text[]"),
            ("queue", list(f.queues), "text[]"),
            ("type", list(f.types), "text[]"),
            ("id", list(f.ids), "int8[]"),
        ):
            if values:
                parts.append(f"{column} = ANY(%s::{cast})")
                args.append(values)
        if f.workflow_id is not None:
            parts.append("workflow_id = %s")
            args.append(f.workflow_id)
        if f.created_after is not None:
            parts.append("created_at >= %s")
            args.append(f.created_after)
        if f.created_before is not None:
            parts.append("created_at < %s")
            args.append(f.created_before)
        return " AND ".join(parts), args

    # -- workflows ----------------------------------------------------------------------

    def workflow_jobs(self, workflow_id: str, limit: int = 100_000) -> list[Job]:
        with self._conn() as conn:
            rows = fetch_rows(conn.execute(
                f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE workflow_id = %s ORDER BY id LIMIT %s", (workflow_id, limit)
            ))
        return [self._job(r) for r in rows]

    def job_edges(self, job_ids: Sequence[int]) -> list[tuple[int, int, bool]]:
        with self._conn() as conn:
            return graph.edges(conn, job_ids)

    def parent_results(self, job_id: int) -> list[tuple[int, str, str, Any]]:
        with self._conn() as conn:
            return graph.parent_results(conn, job_id)

    def workflow_retry(self, workflow_id: str) -> int:
        with self._conn() as conn:
            count = graph.retry_workflow(conn, workflow_id)
            conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return count

    # -- flow control and schedules (conveyor/backends/postgres/flow.py) -----------------

    def _claim_flow(self, params: ClaimParams) -> list[Any]:
        with self._conn() as conn:
            self._expired(conn, conn.execute(EXPIRE_DUE))
            conn.execute(STAGE_DUE, (self.channel,))
            return flow.claim(conn, params)

    def schedules_sync(self, schedules: Sequence[NewSchedule], owned_types: Sequence[str] | None) -> None:
        """Write declared schedules. ``owned_types`` (the syncing app's job types): update rows and
        disable the rows of those types no longer declared; None: only add missing rows."""
        with self._conn() as conn:
            flow.schedules_sync(conn, schedules, owned_types)

    def schedules_list(self) -> list[Schedule]:
        with self._conn() as conn:
            return flow.schedules_list(conn)

    def schedules_due(self) -> tuple[datetime, list[Schedule]]:
        with self._conn() as conn:
            return flow.schedules_due(conn)

    def schedule_fire(self, params: FireParams) -> list[int] | None:
        with self._conn() as conn:
            return flow.schedule_fire(conn, params, self._insert)

    def schedule_set(self, name: str, paused: bool, next_fire_at: datetime | None = None) -> bool:
        with self._conn() as conn:
            return flow.schedule_set(conn, name, paused, next_fire_at)

    def schedule_put(self, schedule: NewSchedule, create: bool) -> bool:
        with self._conn() as conn:
            return flow.schedule_put(conn, schedule, create)

    def schedule_remove(self, name: str) -> bool:
        with self._conn() as conn:
            return flow.schedule_remove(conn, name)

    # -- workers ------------------------------------------------------------------------

    def workers_heartbeat(self, info: WorkerInfo) -> None:
        with self._conn() as conn:
            conn.execute(
                """INSERT INTO conveyor_workers (id, host, pid, queues, concurrency, running, started_at, heartbeat_at, meta)
                   VALUES (%s, %s, %s, %s, %s, %s, now(), now(), %s)
                   ON CONFLICT (id) DO UPDATE SET running = excluded.running, heartbeat_at = excluded.heartbeat_at,
                                                  meta = excluded.meta""",
                (info.id, info.host, info.pid, list(info.queues), info.concurrency, info.running, Jsonb(info.meta)),
            )

    def workers_remove(self, worker_id: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM conveyor_workers WHERE id = %s", (worker_id,))

    def workers_list(self) -> list[WorkerInfo]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, host, pid, queues, concurrency, running, started_at, heartbeat_at, meta "
                "FROM conveyor_workers ORDER BY started_at"
            ).fetchall()
        return [WorkerInfo(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows]

    # -- waking -------------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on every NOTIFY from an enqueue anywhere (one LISTEN connection)."""
        return self._listeners.add(callback)

    def listen_finished(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a transaction anywhere finished jobs. Returns once listening
        (so a caller that reads a job's state next cannot miss its finish)."""
        stop = self._also(self._finished, callback)
        if self.listen_url is None:  # behind a transaction pooler with no direct connection: waiters look each second
            return stop
        if not self._listening.wait(self.timeout):
            stop()
            raise BackendUnavailable(f"PostgreSQL: could not LISTEN within {self.timeout:g} s")
        return stop

    def listen_cancel(self, callback: Callable[[list[int]], None]) -> Callable[[], None]:
        """Call ``callback`` with the ids of running jobs an operator cancelled, as it happens; with
        no ids when the LISTEN connection (re)starts: cancels may have been missed, look now."""
        return self._also(self._cancels, callback)

    def _also(self, callbacks: list[Any], callback: Any) -> Callable[[], None]:
        """Add ``callback`` to one of the other channels' lists, keeping the LISTEN thread (started and
        owned by ``self._listeners``) running while it is there."""
        callbacks.append(callback)
        keep = self._listeners.add(_keep_listening)

        def stop() -> None:
            if callback in callbacks:
                callbacks.remove(callback)
            keep()

        return stop

    def _listen_loop(self) -> None:
        delay = 0.1
        while not self._closing.is_set():
            try:
                if not self._migrated:
                    self.migrate()  # also names this schema's channel
                if self.listen_url is None:
                    log.info("behind a transaction pooler without db_listen_url: workers poll, nothing LISTENs")
                    return
                with psycopg.connect(self.listen_url, autocommit=True) as conn:
                    done, cancel = self.channel + DONE_SUFFIX, self.channel + CANCEL_SUFFIX
                    conn.execute(f"LISTEN {self.channel}; LISTEN {done}; LISTEN {cancel}")
                    self._hints.connected(True)
                    delay = 0.1
                    self._listening.set()
                    self._fire()  # anything enqueued, finished or cancelled while we were not listening
                    self._fire_finished()
                    self._fire_cancel("")
                    while not self._closing.is_set():
                        for n in conn.notifies(timeout=0.5, stop_after=1):
                            if n.channel == done:
                                self._fire_finished()
                            elif n.channel == cancel:
                                self._fire_cancel(n.payload)
                            else:
                                self._hints.heard(n.payload)
                                self._fire()
                self._hints.connected(False)
            except (psycopg.Error, BackendError) as exc:
                self._hints.connected(False)
                self._listening.clear()
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", exc, delay)
                self._closing.wait(delay)
                delay = min(delay * 2, 5.0)

    def _fire(self) -> None:
        self._listeners.wake()

    def _fire_finished(self) -> None:
        for callback in list(self._finished):
            callback()

    def _fire_cancel(self, payload: str) -> None:
        ids = [int(i) for i in payload.split(",") if i.isdigit()]
        for callback in list(self._cancels):
            callback(ids)

    # -- rows ---------------------------------------------------------------------------

    @staticmethod
    def _job(r: Sequence[Any]) -> Job:
        if type(r) is Salvaged:
            return salvaged_job(r, decoded=True)
        cols = read_json_columns(r[4], r[19], r[20], r[21], decoded=True)
        state, odd_state = read_state(r[3])
        corrupt = corrupt_reason(cols.corrupt, odd_state)
        return job_from_fields((
            r[0], r[1], r[2], state, cols.payload, r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
            r[14], r[15], r[16], r[17], r[18], cols.progress, cols.result, cols.errors, r[22], r[24], corrupt, read_meta(r[23]),
        ))  # fmt: skip


def _keep_listening() -> None:
    """A jobs-channel listener that does nothing: it keeps the LISTEN thread up for the other channels."""
