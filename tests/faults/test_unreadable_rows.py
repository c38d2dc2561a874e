"""A row that cannot be read back (written by an older version, or behind Conveyor's back) never
poisons the claims: it goes to the dead letters alone, with the reason, and every surface can
still list and show it."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import running_worker, wait_until

DEEP = '{"a":' * 989 + "{}" + "}" * 989

SPOILS = {
    # column, SQLite value, PostgreSQL value (an SQL expression)
    "run_at-year-0": ("run_at", -62135614800.0, "'0001-01-01 01:00:00+05'::timestamptz"),
    "run_at-year-33715": ("run_at", 1e12, "to_timestamp(1e12)"),
    "payload-990-deep": ("payload", DEEP, f"'{DEEP}'::jsonb"),
}


def spoil(app: Conveyor, job_id: int, spoil_name: str) -> None:
    column, lite, pg = SPOILS[spoil_name]
    with app.transaction() as tx:
        if isinstance(tx, sqlite3.Connection):
            tx.execute(f"UPDATE conveyor_jobs SET {column} = ? WHERE id = ?", (lite, job_id))
        else:
            tx.execute(f"UPDATE conveyor_jobs SET {column} = {pg} WHERE id = %s", (job_id,))


def everything_readable(app: Conveyor, ids: list[int]) -> None:
    assert {j.id for j in app.admin.jobs.list(limit=1000)} >= set(ids)
    for job_id in ids:
        assert app.admin.jobs.get(job_id).id == job_id
    app.admin.dead_letters.list()


@pytest.mark.parametrize("spoil_name", list(SPOILS))
def test_an_unreadable_row_goes_to_the_dead_letters_alone(app: Conveyor, spoil_name: str) -> None:
    @app.job(max_attempts=3)
    def task(p: dict) -> int:  # type: ignore[type-arg]
        return 1

    fine = [app.enqueue("task", {"n": i}) for i in range(10)]
    bad = app.enqueue("task", {"n": -1})
    fine += [app.enqueue("task", {"n": i}) for i in range(10, 20)]
    spoil(app, bad, spoil_name)
    column = SPOILS[spoil_name][0]
    job = app.admin.jobs.get(bad)  # readable, with the reason, never an exception
    assert job.corrupt and column in job.corrupt, job.corrupt
    everything_readable(app, [*fine, bad])
    with running_worker(app, concurrency=4):
        wait_until(lambda: app.admin.jobs.get(bad).state is JobState.DEAD, message="the unreadable row to be dead-lettered")
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.COMPLETED for i in fine))
    job = app.admin.jobs.get(bad)
    assert job.attempt == 1
    assert "corrupt job row" in job.errors[-1].error and column in job.errors[-1].error
    assert [j.id for j in app.admin.dead_letters.list()] == [bad]
    everything_readable(app, [*fine, bad])


def test_invalid_utf8_in_a_row_does_not_stop_claims_or_listing(sqlite_url: str) -> None:
    """What an older version wrote for a lone surrogate in an exception message (SQLite only:
    PostgreSQL cannot hold invalid UTF-8 at all)."""
    app = Conveyor(sqlite_url, poll_interval=0.05, finish_delay=0.002)
    try:

        @app.job(max_attempts=3)
        def task(p: dict) -> int:  # type: ignore[type-arg]
            return 1

        ids = [app.enqueue("task", {"n": i}) for i in range(5)]
        with app.transaction() as tx:  # the bytes json_insert wrote for "\\ud800"
            tx.execute(
                "UPDATE conveyor_jobs SET errors = '[{\"attempt\":1,\"at\":1.0,\"error\":\"ValueError: bad ' || CAST(X'EDA080' AS TEXT) || '\"}]' WHERE id = ?",
                (ids[0],),
            )
        assert app.admin.jobs.get(ids[0]).errors[0].error.startswith("ValueError: bad ")
        everything_readable(app, ids)
        with running_worker(app):
            wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.COMPLETED for i in ids))
        everything_readable(app, ids)
    finally:
        app.close()


def test_every_surface_shows_an_unreadable_row(database_url: str) -> None:
    """The admin API, the dashboard and ``conveyor jobs``/``dlq show`` list and show such rows (they
    answered 500 for a run_at in year 33715)."""
    from conveyor.web import create_app
    from tests.cli.test_cli import run
    from tests.web.conftest import WRITE, serve

    app = Conveyor(database_url, admin_token=WRITE)
    try:

        @app.job()
        def task(p: dict) -> None:  # type: ignore[type-arg]
            return None

        ids = [app.enqueue("task", {"n": i}) for i in range(3)]
        spoil(app, ids[0], "run_at-year-33715")
        spoil(app, ids[1], "payload-990-deep")
        with serve(create_app(app)) as url:
            headers = {"Authorization": f"Bearer {WRITE}"}
            listed = httpx.get(f"{url}/api/jobs", headers=headers)
            assert listed.status_code == 200 and {j["id"] for j in listed.json()["jobs"]} == set(ids)
            for job_id in ids:
                assert httpx.get(f"{url}/api/jobs/{job_id}", headers=headers).status_code == 200
                assert httpx.get(f"{url}/jobs/{job_id}", headers=headers).status_code == 200
            for page in ("/jobs", "/dlq", "/", "/api/stats", "/api/health", "/api/dlq", "/api/workflows"):
                assert httpx.get(f"{url}{page}", headers=headers).status_code == 200, page
        out = run(database_url, "jobs")
        assert out.returncode == 0, out.stderr
        assert str(ids[0]) in out.stdout
    finally:
        app.close()
