"""A job row corrupted in the database is moved aside with the reason; the worker carries on."""

from __future__ import annotations

import sqlite3

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import running_worker, wait_until


def corrupt(app: Conveyor, job_id: int, sqlite_payload: str, pg_payload: str) -> None:
    with app.transaction() as tx:
        if isinstance(tx, sqlite3.Connection):
            tx.execute("UPDATE conveyor_jobs SET payload = ?, errors = 'not json' WHERE id = ?", (sqlite_payload, job_id))
        else:  # jsonb cannot hold broken JSON: the worst a PostgreSQL row can hold is the wrong JSON
            tx.execute("UPDATE conveyor_jobs SET payload = %s::jsonb WHERE id = %s", (pg_payload, job_id))


def test_corrupt_payload_goes_to_the_dlq_and_others_flow(app: Conveyor) -> None:
    @app.job(max_attempts=3)
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    broken = app.enqueue("task", {"n": 1})
    fine = [app.enqueue("task", {"n": i}) for i in range(5)]
    corrupt(app, broken, "{not json", '"a string, not an object"')
    assert app.admin.jobs.get(broken).corrupt  # readable, with the reason, never an exception
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(broken).state is JobState.DEAD)
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.COMPLETED for i in fine))
    job = app.admin.jobs.get(broken)
    assert job.attempt == 1
    assert "corrupt job row" in job.errors[-1].error and "payload" in job.errors[-1].error
    assert app.admin.dead_letters.list()[0].id == broken


def test_an_unknown_state_is_refused_by_the_database(app: Conveyor) -> None:
    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    job_id = app.enqueue("task", {})
    mark = "?" if app.backend.flavour == "sqlite" else "%s"  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="(?i)check"), app.transaction() as tx:
        tx.execute(f"UPDATE conveyor_jobs SET state = 'exploded' WHERE id = {mark}", (job_id,))
    assert app.admin.jobs.get(job_id).state is JobState.PENDING
