"""The job graph on SQLite: dependency edges, and waking or cancelling dependents when parents finish."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import NewJob
from conveyor.backends.sqlite.clock import NOW

SATISFIED = "(p.state = 'completed' OR (d.on_failure = 'continue' AND p.state IN ('dead', 'cancelled', 'expired')))"

CANCEL_DEPENDENTS = f"""
UPDATE conveyor_jobs SET
    state = 'cancelled', finished_at = {NOW},
    errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json_object('attempt', attempt, 'at', {NOW}, 'error',
        'cancelled: job ' || (SELECT min(d.depends_on) FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on
                              WHERE d.job_id = conveyor_jobs.id AND d.on_failure = 'cancel'
                                AND p.state IN ('dead', 'cancelled', 'expired')) || ' it depends on did not complete'))
WHERE state = 'waiting' AND id IN (
    SELECT d.job_id FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on
    WHERE d.depends_on IN (SELECT value FROM json_each(?)) AND d.on_failure = 'cancel' AND p.state IN ('dead', 'cancelled', 'expired'))
RETURNING id
"""

PROMOTE_DEPENDENTS = f"""
UPDATE conveyor_jobs SET state = CASE WHEN run_at > {NOW} THEN 'scheduled' ELSE 'pending' END
WHERE state = 'waiting'
  AND id IN (SELECT job_id FROM conveyor_deps WHERE depends_on IN (SELECT value FROM json_each(?)))
  AND NOT EXISTS (SELECT 1 FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on
                  WHERE d.job_id = conveyor_jobs.id AND NOT {SATISFIED})
"""


def parent_states(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
    rows = conn.execute("SELECT id, state FROM conveyor_jobs WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
    return dict(rows.fetchall())


def add_edges(conn: sqlite3.Connection, job_id: int, job: NewJob, parents: Sequence[int], initial: str | None) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO conveyor_deps (job_id, depends_on, on_failure) VALUES (?, ?, ?)",
        [(job_id, p, "continue" if d.continue_on_failure else "cancel") for d, p in zip(job.depends_on, parents)],
    )
    if initial == "cancelled":
        conn.execute(
            f"UPDATE conveyor_jobs SET finished_at = {NOW}, errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json_object('attempt', 0, "
            f"'at', {NOW}, 'error', 'cancelled: a job it depends on did not complete')) WHERE id = ?",
            (job_id,),
        )


def resolve(conn: sqlite3.Connection, finished: Sequence[int]) -> bool:
    """Cancel (transitively) or wake the dependents of jobs that just finished; True if any woke."""
    if not finished or conn.execute("SELECT NOT EXISTS (SELECT 1 FROM conveyor_deps)").fetchone()[0]:
        return False
    parents = list(finished)
    frontier = list(finished)
    while frontier:
        frontier = [r[0] for r in conn.execute(CANCEL_DEPENDENTS, (json.dumps(frontier),)).fetchall()]
        parents.extend(frontier)
    return conn.execute(PROMOTE_DEPENDENTS, (json.dumps(parents),)).rowcount > 0


def edges(conn: sqlite3.Connection, job_ids: Sequence[int]) -> list[tuple[int, int, bool]]:
    """(job, parent, continue_on_failure) for every edge into ``job_ids``."""
    rows = conn.execute(
        "SELECT job_id, depends_on, on_failure FROM conveyor_deps WHERE job_id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(job_ids)),),
    ).fetchall()
    return [(r[0], r[1], r[2] == "continue") for r in rows]


def parent_results(conn: sqlite3.Connection, job_id: int) -> list[tuple[int, str, str, Any]]:
    rows = conn.execute(
        "SELECT p.id, p.type, p.state, p.result FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on "
        "WHERE d.job_id = ? ORDER BY p.id",
        (job_id,),
    ).fetchall()
    return [(r[0], r[1], r[2], None if r[3] is None else json.loads(r[3])) for r in rows]


def retry_workflow(conn: sqlite3.Connection, workflow_id: str) -> int:
    """Dead jobs back to pending with fresh attempts; jobs cancelled because of them back to waiting."""
    retried = conn.execute(
        f"UPDATE conveyor_jobs SET state = 'pending', attempt = 0, run_at = {NOW}, finished_at = NULL "
        "WHERE workflow_id = ? AND state = 'dead' RETURNING id",
        (workflow_id,),
    ).fetchall()
    conn.execute(
        "UPDATE conveyor_jobs SET state = 'waiting', finished_at = NULL WHERE workflow_id = ? AND state = 'cancelled' "
        "AND id IN (SELECT job_id FROM conveyor_deps)",
        (workflow_id,),
    )
    waiting = [r[0] for r in conn.execute(
        "SELECT depends_on FROM conveyor_deps WHERE job_id IN (SELECT id FROM conveyor_jobs WHERE workflow_id = ? AND state = 'waiting')",
        (workflow_id,),
    ).fetchall()]
    conn.execute(PROMOTE_DEPENDENTS, (json.dumps(waiting),))
    return len(retried)
