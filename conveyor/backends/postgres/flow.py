"""Flow control on PostgreSQL: the limited claim's SQL, and schedule rows.

Claims touching the same limit are serialised by a transaction-scoped advisory lock per
limit key, taken (in one order) before counting: under READ COMMITTED each later statement
sees the previous holder's committed claims, so two workers cannot both take the last slot.
Times in the limited claim come from ``clock_timestamp()`` read after the locks, so a claim
that waited for a lock logs its starts at the moment it really made them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from conveyor.backends import flow
from conveyor.backends.base import (
    JOB_COLUMNS,
    ClaimLimit,
    ClaimParams,
    FireParams,
    Inserted,
    LimitKind,
    NewJob,
    NewSchedule,
    Schedule,
)
from conveyor.backends.postgres.rows import fetch_rows

J_COLUMNS = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))
CANDIDATE = "SELECT id, type, queue, priority, extract(epoch FROM run_at)::float8 FROM conveyor_jobs"
NARROW = " AND NOT (type = ANY(%(types_out)s::text[])) AND NOT (id = ANY(%(seen)s::int8[]))"
SCHEDULE_COLUMNS = "name, expression, tz, job_type, payload, options, missed, enabled, paused, next_fire_at, last_fire_at, last_job_id, source"

CLAIM_PICKED = f"""
UPDATE conveyor_jobs j SET state = 'running', attempt = j.attempt + 1, lease_token = j.lease_token + 1,
       worker_id = %s, attempted_at = %s, lease_expires_at = %s + make_interval(secs => %s)
WHERE j.id = ANY(%s::int8[]) AND j.state = 'pending'
RETURNING {J_COLUMNS}
"""

LEVELS = """
WITH RECURSIVE lv(p) AS (
    SELECT max(priority) FROM conveyor_jobs WHERE state = 'pending' AND queue = %(q)s
    UNION ALL
    SELECT (SELECT max(priority) FROM conveyor_jobs WHERE state = 'pending' AND queue = %(q)s AND priority < lv.p)
    FROM lv WHERE lv.p IS NOT NULL
)
SELECT p FROM lv WHERE p IS NOT NULL
"""
"""A skip scan over the claim index: one seek per distinct priority, however many jobs wait."""

INSERT_SCHEDULE = """
INSERT INTO conveyor_schedules AS s (name, expression, tz, job_type, payload, options, missed, next_fire_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[], %s::text[], %s::timestamptz[])
"""

UPSERT_SCHEDULE = INSERT_SCHEDULE + """
ON CONFLICT (name) DO UPDATE SET
    next_fire_at = CASE WHEN s.expression <> excluded.expression OR s.tz <> excluded.tz OR NOT s.enabled
                        THEN excluded.next_fire_at ELSE s.next_fire_at END,
    expression = excluded.expression, tz = excluded.tz, job_type = excluded.job_type, payload = excluded.payload,
    options = excluded.options, missed = excluded.missed, enabled = true, source = 'code', updated_at = now()
"""


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory-lock id for a limit key."""
    return int.from_bytes(hashlib.blake2b(f"conveyor:limit:{key}".encode(), digest_size=8).digest(), "big", signed=True)


def claim(conn: psycopg.Connection[Any], params: ClaimParams) -> list[Any]:
    """The flow-controlled claim, inside the caller's transaction (due jobs already staged)."""
    if params.limits:
        locks = sorted({lock_id(lim.key) for lim in params.limits})
        conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::int8[]) AS k", (locks,))
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    budgets = {lim.key: budget(conn, lim, moment) for lim in params.limits}
    source = flow.Source(
        page=lambda q, n, ex: page(conn, q, n, ex),
        levels=lambda q: [r[0] for r in conn.execute(LEVELS, {"q": q})],
        heads=lambda q, p, n, ex: heads(conn, q, p, n, ex),
    )
    picked = flow.choose(params, budgets, moment.timestamp(), source)
    if not picked:
        return []
    rows = fetch_rows(conn.execute(CLAIM_PICKED, (params.worker_id, moment, moment, params.lease_seconds, [c.id for c in picked])))
    starts = flow.rate_starts(params.limits, [(r[1], r[2]) for r in rows])
    if starts:
        conn.execute("INSERT INTO conveyor_rate_starts (key, at) SELECT k, %s FROM unnest(%s::text[]) AS k", (moment, starts))
    return rows


def budget(conn: psycopg.Connection[Any], limit: ClaimLimit, moment: datetime) -> int:
    """How many more jobs ``limit`` allows now."""
    if limit.kind is LimitKind.RATE:
        conn.execute("DELETE FROM conveyor_rate_starts WHERE key = %s AND at <= %s", (limit.key, moment - timedelta(seconds=limit.per)))
        row = conn.execute("SELECT count(*) FROM conveyor_rate_starts WHERE key = %s", (limit.key,)).fetchone()
    elif limit.queue is not None:
        row = conn.execute("SELECT count(*) FROM conveyor_jobs WHERE state = 'running' AND queue = %s", (limit.queue,)).fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM conveyor_jobs WHERE state = 'running' AND type = ANY(%s::text[])", (list(limit.types),)
        ).fetchone()
    assert row is not None
    return limit.count - int(row[0])


def narrowing(ex: flow.Exclusion) -> tuple[str, dict[str, Any]]:
    sql = NARROW
    args: dict[str, Any] = {"types_out": sorted(ex.types_out), "seen": sorted(ex.seen)}
    if ex.types_in:
        sql += " AND type = ANY(%(types_in)s::text[])"
        args["types_in"] = list(ex.types_in)
    return sql, args


def page(conn: psycopg.Connection[Any], queue: str, n: int, ex: flow.Exclusion) -> list[flow.Candidate]:
    sql, args = narrowing(ex)
    rows = conn.execute(
        f"{CANDIDATE} WHERE state = 'pending' AND queue = %(q)s{sql} ORDER BY priority DESC, id LIMIT %(n)s FOR UPDATE SKIP LOCKED",
        {"q": queue, "n": n, **args},
    )
    return [flow.Candidate(*r) for r in rows]


def heads(conn: psycopg.Connection[Any], queue: str, priority: int, n: int, ex: flow.Exclusion) -> list[flow.Candidate]:
    sql, args = narrowing(ex)
    rows = conn.execute(
        f"{CANDIDATE} WHERE state = 'pending' AND queue = %(q)s AND priority = %(p)s{sql} ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED",
        {"q": queue, "p": priority, "n": n, **args},
    )
    return [flow.Candidate(*r) for r in rows]


# -- schedules ------------------------------------------------------------------------


def schedules_sync(conn: psycopg.Connection[Any], schedules: Sequence[NewSchedule], owned_types: Sequence[str] | None) -> None:
    columns = (
        [s.name for s in schedules],
        [s.expression for s in schedules],
        [s.tz for s in schedules],
        [s.job_type for s in schedules],
        [s.payload for s in schedules],
        [s.options for s in schedules],
        [s.missed for s in schedules],
        [s.next_fire_at for s in schedules],
    )
    if schedules:
        conn.execute((INSERT_SCHEDULE + " ON CONFLICT (name) DO NOTHING") if owned_types is None else UPSERT_SCHEDULE, columns)
    if owned_types is not None:
        conn.execute(
            "UPDATE conveyor_schedules SET enabled = false, updated_at = now() "
            "WHERE enabled AND source = 'code' AND job_type = ANY(%s::text[]) AND NOT (name = ANY(%s::text[]))",
            (list(owned_types), [s.name for s in schedules]),
        )


def schedules_list(conn: psycopg.Connection[Any], active_only: bool = False) -> list[Schedule]:
    where = "WHERE enabled AND NOT paused" if active_only else ""
    rows = conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM conveyor_schedules {where} ORDER BY next_fire_at, name").fetchall()
    return [Schedule(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12]) for r in rows]


def schedules_due(conn: psycopg.Connection[Any]) -> tuple[datetime, list[Schedule]]:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0], schedules_list(conn, active_only=True)


def schedule_fire(
    conn: psycopg.Connection[Any], params: FireParams, insert: Callable[[psycopg.Connection[Any], Sequence[NewJob]], list[Inserted]]
) -> list[int] | None:
    """Compare-and-set the schedule's next fire time; only the winner inserts the fire's jobs.

    A second worker racing for the same fire waits on the row lock, then re-reads the row,
    finds ``next_fire_at`` moved, and updates nothing.
    """
    moved = conn.execute(
        "UPDATE conveyor_schedules SET next_fire_at = %s, last_fire_at = coalesce(%s, last_fire_at), updated_at = now() "
        "WHERE name = %s AND next_fire_at = %s AND enabled AND NOT paused",
        (params.next_fire_at, params.fired_at, params.name, params.expected),
    ).rowcount
    if not moved:
        return None
    ids = [i.id for i in insert(conn, params.jobs)] if params.jobs else []
    if ids:
        conn.execute("UPDATE conveyor_schedules SET last_job_id = %s WHERE name = %s", (ids[-1], params.name))
    return ids


def schedule_set(conn: psycopg.Connection[Any], name: str, paused: bool, next_fire_at: datetime | None) -> bool:
    cur = conn.execute(
        "UPDATE conveyor_schedules SET paused = %s, next_fire_at = coalesce(%s, next_fire_at), updated_at = now() WHERE name = %s",
        (paused, next_fire_at, name),
    )
    return bool(cur.rowcount)



def schedule_put(conn: psycopg.Connection[Any], s: NewSchedule, create: bool) -> bool:
    """Add a run-time schedule (False if the name is taken), or change one (False unless a run-time row has it)."""
    if create:
        cur = conn.execute(
            "INSERT INTO conveyor_schedules (name, expression, tz, job_type, payload, options, missed, next_fire_at, source) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, 'runtime') ON CONFLICT (name) DO NOTHING",
            (s.name, s.expression, s.tz, s.job_type, s.payload, s.options, s.missed, s.next_fire_at),
        )
    else:
        cur = conn.execute(
            "UPDATE conveyor_schedules SET expression = %s, tz = %s, job_type = %s, payload = %s::jsonb, options = %s::jsonb, "
            "missed = %s, next_fire_at = %s, enabled = true, updated_at = now() WHERE name = %s AND source = 'runtime'",
            (s.expression, s.tz, s.job_type, s.payload, s.options, s.missed, s.next_fire_at, s.name),
        )
    return bool(cur.rowcount)


def schedule_remove(conn: psycopg.Connection[Any], name: str) -> bool:
    """Delete a run-time schedule; rows declared in code are left to the code."""
    return bool(conn.execute("DELETE FROM conveyor_schedules WHERE name = %s AND source = 'runtime'", (name,)).rowcount)
