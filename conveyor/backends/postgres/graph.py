"""The job graph on PostgreSQL: dependency edges, and waking or cancelling dependents (conveyor_resolve)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from conveyor.backends.base import NewJob


def parent_states(conn: psycopg.Connection[Any], ids: Sequence[int]) -> dict[int, str]:
    """Parents' states, read under FOR SHARE: a parent finishing right now is waited for, so a new
    dependent never misses the wake-up of a parent that completes concurrently."""
    rows = conn.execute("SELECT id, state FROM conveyor_jobs WHERE id = ANY(%s) ORDER BY id FOR SHARE", (list(ids),))
    return dict(rows.fetchall())


def add_edges(conn: psycopg.Connection[Any], job_id: int, job: NewJob, parents: Sequence[int], initial: str | None) -> None:
    conn.execute(
        "INSERT INTO conveyor_deps (job_id, depends_on, on_failure) "
        "SELECT %s, p, f FROM unnest(%s::int8[], %s::text[]) AS e(p, f) ON CONFLICT DO NOTHING",
        (job_id, list(parents), ["continue" if d.continue_on_failure else "cancel" for d in job.depends_on]),
    )
    if initial == "cancelled":
        conn.execute(
            "UPDATE conveyor_jobs SET finished_at = now(), errors = errors || jsonb_build_array(jsonb_build_object("
            "'attempt', 0, 'at', extract(epoch FROM now()), 'error', 'cancelled: a job it depends on did not complete')) "
            "WHERE id = %s",
            (job_id,),
        )


def resolve(conn: psycopg.Connection[Any], finished: Sequence[int], notify: str | None = None) -> bool:
    """Cancel (transitively) or wake the dependents of jobs that just finished; True if any woke.

    ``notify``: a channel to tell, in the same round trip, that jobs finished (result waiters)."""
    if not finished:
        return False
    if notify is not None:
        row = conn.execute("SELECT conveyor_resolve(%s::int8[]), pg_notify(%s, '')", (list(finished), notify)).fetchone()
    else:
        row = conn.execute("SELECT conveyor_resolve(%s::int8[])", (list(finished),)).fetchone()
    return bool(row and row[0])


def edges(conn: psycopg.Connection[Any], job_ids: Sequence[int]) -> list[tuple[int, int, bool]]:
    rows = conn.execute(
        "SELECT job_id, depends_on, on_failure FROM conveyor_deps WHERE job_id = ANY(%s)", (list(job_ids),)
    ).fetchall()
    return [(r[0], r[1], r[2] == "continue") for r in rows]


def parent_results(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[int, str, str, Any]]:
    rows = conn.execute(
        "SELECT p.id, p.type, p.state, p.result FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on "
        "WHERE d.job_id = %s ORDER BY p.id",
        (job_id,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def retry_workflow(conn: psycopg.Connection[Any], workflow_id: str) -> int:
    """Dead jobs back to pending with fresh attempts; jobs cancelled because of them back to waiting."""
    retried = conn.execute(
        "UPDATE conveyor_jobs SET state = 'pending', attempt = 0, run_at = now(), finished_at = NULL "
        "WHERE workflow_id = %s AND state = 'dead' RETURNING id",
        (workflow_id,),
    ).fetchall()
    conn.execute(
        "UPDATE conveyor_jobs SET state = 'waiting', finished_at = NULL WHERE workflow_id = %s AND state = 'cancelled' "
        "AND id IN (SELECT job_id FROM conveyor_deps)",
        (workflow_id,),
    )
    parents = [r[0] for r in conn.execute(
        "SELECT depends_on FROM conveyor_deps WHERE job_id IN "
        "(SELECT id FROM conveyor_jobs WHERE workflow_id = %s AND state = 'waiting')",
        (workflow_id,),
    ).fetchall()]
    resolve(conn, parents)
    return len(retried)
