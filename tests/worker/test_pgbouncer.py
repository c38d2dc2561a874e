"""Behind PgBouncer in transaction pooling mode (Debian's pgbouncer, started by tests/pgbouncer.py).

Every transaction may land on another server connection, so nothing may rely on session
state: no server-side prepared statements (``db_pooler="transaction"`` turns them off), only
transaction-scoped advisory locks and settings, and LISTEN on a direct connection
(``db_listen_url``) or none at all, the workers then polling.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import running_worker, wait_until
from conveyor.workflow import chain, step
from tests.pgbouncer import BouncerUrls


def listeners(direct_url: str) -> int:
    """Sessions on the test's database that LISTEN (as seen by the server)."""
    db = direct_url.rsplit("/", 1)[1]
    with psycopg.connect(direct_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN %%'", (db,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def shop(app: Conveyor) -> Conveyor:
    failed_once: set[int] = set()

    @app.job(max_attempts=3, backoff="fixed")
    def flaky(p: dict, ctx) -> int:  # type: ignore[no-untyped-def, type-arg]
        if ctx.job_id not in failed_once:
            failed_once.add(ctx.job_id)
            raise RuntimeError("first attempt fails")
        return int(p["n"])

    @app.job()
    async def step_job(p: dict) -> str:  # type: ignore[type-arg]
        return str(p["n"])

    return app


@pytest.fixture
def pooled_app(pgbouncer_urls: BouncerUrls, request: pytest.FixtureRequest) -> Iterator[Conveyor]:
    listen = request.param == "listen"
    app = Conveyor(
        pgbouncer_urls.pooled,
        db_pooler="transaction",
        db_listen_url=pgbouncer_urls.direct if listen else None,
        poll_interval=0.05,
        finish_delay=0.002,
    )
    yield shop(app)
    app.close()


def run_everything(app: Conveyor) -> list[int]:
    """Enqueue what exercises every kind of statement, many times over (a prepared statement
    would be created after a few executions, and then be missing on another server session)."""
    ids = [app.enqueue("step_job", {"n": i}) for i in range(30)]
    ids += app.enqueue_many([("step_job", {"n": i}) for i in range(100)])
    ids += [app.enqueue("flaky", {"n": i}) for i in range(10)]
    ids += [app.enqueue("step_job", {"n": i}, idempotency_key=f"k{i % 5}") for i in range(20)]  # 5 unique
    with app.transaction() as tx:
        ids.append(app.enqueue("step_job", {"n": "tx"}, connection=tx))
    flow = app.enqueue_workflow(chain(step("step_job", {"n": "a"}), step("step_job", {"n": "b"}), step("step_job", {"n": "c"})))
    return sorted(set(ids) | set(flow.job_ids))


@pytest.mark.parametrize("pooled_app", ["listen"], indirect=True)
def test_jobs_run_through_pgbouncer_with_listen_on_a_direct_connection(pooled_app: Conveyor, pgbouncer_urls: BouncerUrls) -> None:
    ids = run_everything(pooled_app)
    with running_worker(pooled_app, concurrency=20):
        wait_until(lambda: pooled_app.admin.jobs.count(state=[JobState.COMPLETED]) == len(ids), timeout=60, message="all jobs completed")
        assert listeners(pgbouncer_urls.direct) == 1
        late = pooled_app.enqueue("step_job", {"n": "late"})
        wait_until(lambda: pooled_app.admin.jobs.get(late).state is JobState.COMPLETED, timeout=30)
    assert pooled_app.admin.jobs.count(state=[JobState.DEAD]) == 0


@pytest.mark.parametrize("pooled_app", ["poll"], indirect=True)
def test_without_a_listen_url_workers_poll_through_pgbouncer(pooled_app: Conveyor, pgbouncer_urls: BouncerUrls) -> None:
    ids = run_everything(pooled_app)
    with running_worker(pooled_app, concurrency=20):
        wait_until(lambda: pooled_app.admin.jobs.count(state=[JobState.COMPLETED]) == len(ids), timeout=60, message="all jobs completed")
        assert listeners(pgbouncer_urls.direct) == 0
    flaky = pooled_app.admin.jobs.list(type="flaky")
    assert flaky and all(j.attempt == 2 and len(j.errors) == 1 for j in flaky)


def test_an_unknown_pooler_mode_is_refused_naming_the_setting(pgbouncer_urls: BouncerUrls) -> None:
    app = Conveyor(pgbouncer_urls.pooled, db_pooler="session-ish")
    with pytest.raises(Exception, match="db_pooler"):
        app.admin.jobs.count()
    app.close()
