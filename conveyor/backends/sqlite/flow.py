"""Flow control on SQLite: the limited claim's SQL, and schedule rows.

Every write runs inside the caller's ``BEGIN IMMEDIATE`` transaction, which already
serialises all claims on the file: counting a limit and taking its last slot cannot race.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

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
from conveyor.backends.sqlite.clock import NOW
from conveyor.timeutil import from_epoch, to_epoch

CANDIDATE = "SELECT id, type, queue, priority, run_at FROM conveyor_jobs"
SCHEDULE_COLUMNS = "name, expression, tz, job_type, payload, options, missed, enabled, paused, next_fire_at, last_fire_at, last_job_id, source"

CLAIM_PICKED = f"""
UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1,
       worker_id = ?, attempted_at = ?, lease_expires_at = ? + ?
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'
RETURNING {JOB_COLUMNS}
"""

INSERT_SCHEDULE = f"""
INSERT INTO conveyor_schedules (name, expression, tz, job_type, payload, options, missed, next_fire_at, updated_at)
VALUES (:name, :expression, :tz, :job_type, :payload, :options, :missed, :next_fire_at, {NOW})
"""

UPSERT_SCHEDULE = INSERT_SCHEDULE + """ON CONFLICT (name) DO UPDATE SET
    next_fire_at = CASE WHEN conveyor_schedules.expression <> excluded.expression OR conveyor_schedules.tz <> excluded.tz
                             OR NOT conveyor_schedules.enabled
                        THEN excluded.next_fire_at ELSE conveyor_schedules.next_fire_at END,
    expression = excluded.expression, tz = excluded.tz, job_type = excluded.job_type, payload = excluded.payload,
    options = excluded.options, missed = excluded.missed, enabled = 1, source = 'code', updated_at = excluded.updated_at
"""


def claim(conn: sqlite3.Connection, params: ClaimParams) -> list[Any]:
    """The flow-controlled claim, inside an open write transaction (due jobs already staged)."""
    now = float(conn.execute(f"SELECT {NOW}").fetchone()[0])
    budgets = {lim.key: budget(conn, lim, now) for lim in params.limits}
    source = flow.Source(
        page=lambda q, n, ex: page(conn, q, n, ex),
        levels=lambda q: [r[0] for r in conn.execute(LEVELS, {"q": q})],
        heads=lambda q, p, n, ex: heads(conn, q, p, n, ex),
    )
    picked = flow.choose(params, budgets, now, source)
    if not picked:
        return []
    rows = conn.execute(
        CLAIM_PICKED, (params.worker_id, now, now, params.lease_seconds, json.dumps([c.id for c in picked]))
    ).fetchall()
    starts = flow.rate_starts(params.limits, [(r[1], r[2]) for r in rows])
    if starts:
        conn.executemany("INSERT INTO conveyor_rate_starts (key, at) VALUES (?, ?)", [(key, now) for key in starts])
    return rows


def budget(conn: sqlite3.Connection, limit: ClaimLimit, now: float) -> int:
    """How many more jobs ``limit`` allows now."""
    if limit.kind is LimitKind.RATE:
        conn.execute("DELETE FROM conveyor_rate_starts WHERE key = ? AND at <= ?", (limit.key, now - limit.per))
        used = conn.execute("SELECT count(*) FROM conveyor_rate_starts WHERE key = ?", (limit.key,)).fetchone()[0]
    elif limit.queue is not None:
        used = conn.execute("SELECT count(*) FROM conveyor_jobs WHERE state = 'running' AND queue = ?", (limit.queue,)).fetchone()[0]
    else:
        used = conn.execute(
            "SELECT count(*) FROM conveyor_jobs WHERE state = 'running' AND type IN (SELECT value FROM json_each(?))",
            (json.dumps(list(limit.types)),),
        ).fetchone()[0]
    return limit.count - int(used)


def narrowing(ex: flow.Exclusion) -> tuple[str, dict[str, Any]]:
    sql = " AND type NOT IN (SELECT value FROM json_each(:types_out)) AND id NOT IN (SELECT value FROM json_each(:seen))"
    args: dict[str, Any] = {"types_out": json.dumps(sorted(ex.types_out)), "seen": json.dumps(sorted(ex.seen))}
    if ex.types_in:
        sql += " AND type IN (SELECT value FROM json_each(:types_in))"
        args["types_in"] = json.dumps(list(ex.types_in))
    return sql, args


def page(conn: sqlite3.Connection, queue: str, n: int, ex: flow.Exclusion) -> list[flow.Candidate]:
    sql, args = narrowing(ex)
    rows = conn.execute(
        f"{CANDIDATE} WHERE state = 'pending' AND queue = :q{sql} ORDER BY priority DESC, id LIMIT :n", {"q": queue, "n": n, **args}
    )
    return [flow.Candidate(*r) for r in rows]


LEVELS = """
WITH RECURSIVE lv(p) AS (
    SELECT max(priority) FROM conveyor_jobs WHERE state = 'pending' AND queue = :q
    UNION ALL
    SELECT (SELECT max(priority) FROM conveyor_jobs WHERE state = 'pending' AND queue = :q AND priority < lv.p)
    FROM lv WHERE lv.p IS NOT NULL
)
SELECT p FROM lv WHERE p IS NOT NULL
"""
"""A skip scan over the claim index: one seek per distinct priority, however many jobs wait."""


def heads(conn: sqlite3.Connection, queue: str, priority: int, n: int, ex: flow.Exclusion) -> list[flow.Candidate]:
    sql, args = narrowing(ex)
    rows = conn.execute(
        f"{CANDIDATE} WHERE state = 'pending' AND queue = :q AND priority = :p{sql} ORDER BY id LIMIT :n",
        {"q": queue, "p": priority, "n": n, **args},
    )
    return [flow.Candidate(*r) for r in rows]


# -- schedules ------------------------------------------------------------------------


def schedules_sync(conn: sqlite3.Connection, schedules: Sequence[NewSchedule], owned_types: Sequence[str] | None) -> None:
    rows = [
        {
            "name": s.name,
            "expression": s.expression,
            "tz": s.tz,
            "job_type": s.job_type,
            "payload": s.payload,
            "options": s.options,
            "missed": s.missed,
            "next_fire_at": to_epoch(s.next_fire_at),
        }
        for s in schedules
    ]
    if owned_types is None:
        conn.executemany(INSERT_SCHEDULE + "ON CONFLICT (name) DO NOTHING", rows)
        return
    conn.executemany(UPSERT_SCHEDULE, rows)
    conn.execute(
        f"UPDATE conveyor_schedules SET enabled = 0, updated_at = {NOW} WHERE enabled AND source = 'code' "
        "AND job_type IN (SELECT value FROM json_each(?)) AND name NOT IN (SELECT value FROM json_each(?))",
        (json.dumps(list(owned_types)), json.dumps([s.name for s in schedules])),
    )


def schedules_list(conn: sqlite3.Connection, active_only: bool = False) -> list[Schedule]:
    where = "WHERE enabled AND NOT paused" if active_only else ""
    rows = conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM conveyor_schedules {where} ORDER BY next_fire_at, name").fetchall()
    return [schedule(r) for r in rows]


def schedules_due(conn: sqlite3.Connection) -> tuple[datetime, list[Schedule]]:
    now = float(conn.execute(f"SELECT {NOW}").fetchone()[0])
    return from_epoch(now), schedules_list(conn, active_only=True)


def schedule_fire(conn: sqlite3.Connection, params: FireParams, insert: Callable[[sqlite3.Connection, Sequence[NewJob]], list[Inserted]]) -> list[int] | None:
    """Compare-and-set the schedule's next fire time; only the winner inserts the fire's jobs."""
    moved = conn.execute(
        f"UPDATE conveyor_schedules SET next_fire_at = ?, last_fire_at = coalesce(?, last_fire_at), updated_at = {NOW} "
        "WHERE name = ? AND abs(next_fire_at - ?) < 0.0005 AND enabled AND NOT paused",
        (
            to_epoch(params.next_fire_at),
            None if params.fired_at is None else to_epoch(params.fired_at),
            params.name,
            to_epoch(params.expected),
        ),
    ).rowcount
    if not moved:
        return None
    ids = [i.id for i in insert(conn, params.jobs)] if params.jobs else []
    if ids:
        conn.execute("UPDATE conveyor_schedules SET last_job_id = ? WHERE name = ?", (ids[-1], params.name))
    return ids


def schedule_set(conn: sqlite3.Connection, name: str, paused: bool, next_fire_at: datetime | None) -> bool:
    return bool(
        conn.execute(
            f"UPDATE conveyor_schedules SET paused = ?, next_fire_at = coalesce(?, next_fire_at), updated_at = {NOW} WHERE name = ?",
            (1 if paused else 0, None if next_fire_at is None else to_epoch(next_fire_at), name),
        ).rowcount
    )


def schedule(r: Sequence[Any]) -> Schedule:
    return Schedule(
        name=r[0],
        expression=r[1],
        tz=r[2],
        job_type=r[3],
        payload=json.loads(r[4]),
        options=json.loads(r[5]),
        missed=r[6],
        enabled=bool(r[7]),
        paused=bool(r[8]),
        next_fire_at=from_epoch(r[9]),
        last_fire_at=None if r[10] is None else from_epoch(r[10]),
        last_job_id=r[11],
        source=r[12],
    )


def schedule_put(conn: sqlite3.Connection, s: NewSchedule, create: bool) -> bool:
    """Add a run-time schedule (False if the name is taken), or change one (False unless a run-time row has it)."""
    values = (s.expression, s.tz, s.job_type, s.payload, s.options, s.missed, to_epoch(s.next_fire_at), s.name)
    if create:
        sql = (
            "INSERT INTO conveyor_schedules (expression, tz, job_type, payload, options, missed, next_fire_at, name, source, updated_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'runtime', {NOW}) ON CONFLICT (name) DO NOTHING"
        )
    else:
        sql = (
            "UPDATE conveyor_schedules SET expression = ?, tz = ?, job_type = ?, payload = ?, options = ?, missed = ?, "
            f"next_fire_at = ?, enabled = 1, updated_at = {NOW} WHERE name = ? AND source = 'runtime'"
        )
    return bool(conn.execute(sql, values).rowcount)


def schedule_remove(conn: sqlite3.Connection, name: str) -> bool:
    """Delete a run-time schedule; rows declared in code are left to the code."""
    return bool(conn.execute("DELETE FROM conveyor_schedules WHERE name = ? AND source = 'runtime'", (name,)).rowcount)
