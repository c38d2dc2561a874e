"""PostgreSQL storage under load: lease renewals are HOT updates, vacuum settings are in the schema.

PostgreSQL only: SQLite rewrites pages in place and keeps no row versions to vacuum.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams, Lease
from conveyor.testing import wait_until
from tests.contract.jobs import declare


@pytest.fixture
def pg_app(pg_url: str) -> Iterator[Conveyor]:
    app = Conveyor(pg_url)
    declare(app)
    yield app
    app.close()


def table_stat(url: str, column: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT {column} FROM pg_stat_user_tables WHERE relid = 'conveyor_jobs'::regclass").fetchone()
    assert row is not None
    return int(row[0])


def test_lease_renewals_are_hot_updates(pg_app: Conveyor, pg_url: str) -> None:
    """No index covers lease_expires_at, so renewing a lease adds no index entry anywhere."""
    pg_app.enqueue("plain", {})
    (job,) = pg_app.backend.jobs_claim(ClaimParams("w1", ("default",), 1, 30.0))
    hot_before = table_stat(pg_url, "n_tup_hot_upd")
    for _ in range(5):
        assert pg_app.backend.leases_renew([Lease(job.id, job.lease_token)], 30.0) == [job.id]
    wait_until(lambda: table_stat(pg_url, "n_tup_hot_upd") >= hot_before + 5, timeout=15)


def test_the_jobs_table_carries_its_vacuum_settings(pg_app: Conveyor, pg_url: str) -> None:
    pg_app.admin.jobs.count()  # migrates
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'conveyor_jobs'::regclass").fetchone()
    assert row is not None
    options = dict(o.split("=") for o in row[0])
    assert options["autovacuum_vacuum_scale_factor"] == "0"
    assert options["autovacuum_vacuum_cost_delay"] == "0"
    assert int(options["fillfactor"]) < 100


def test_an_expired_lease_is_still_rescued_without_its_index(pg_app: Conveyor) -> None:
    job_id = pg_app.enqueue("plain", {})
    pg_app.backend.jobs_claim(ClaimParams("w1", ("default",), 1, 0.05))
    wait_until(lambda: pg_app.backend.jobs_rescue() == [job_id], timeout=10)
    job = pg_app.backend.job_get(job_id)
    assert job is not None and job.state.value == "pending"


def test_the_pruner_s_vacuum_removes_dead_row_versions(pg_app: Conveyor, pg_url: str) -> None:
    """Autovacuum is off on some servers (and was on this project's CI): the pruner's vacuum
    (``vacuum_dead_rows``) is what removes the versions every claim and completion leave."""
    pg_app.enqueue_many([("plain", {"n": str(i)}) for i in range(300)])
    for job in pg_app.backend.jobs_claim(ClaimParams("w1", ("default",), 300, 30.0)):
        pg_app.backend.leases_renew([Lease(job.id, job.lease_token)], 30.0)
    wait_until(lambda: table_stat(pg_url, "n_dead_tup") >= 200, timeout=15)
    assert pg_app.insights.tables_vacuum(10**9) == []  # too few dead rows: nothing to do
    assert pg_app.insights.tables_vacuum(200) == ["conveyor_jobs"]
    wait_until(lambda: table_stat(pg_url, "n_dead_tup") < 200, timeout=15)
    assert pg_app.insights.tables_vacuum(200) == []  # just vacuumed


def test_vacuum_is_a_no_op_on_sqlite(sqlite_url: str) -> None:
    app = Conveyor(sqlite_url)
    try:
        assert app.insights.tables_vacuum(0) == []
    finally:
        app.close()
