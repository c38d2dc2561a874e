"""Enqueue: validation, options, bulk, idempotency, uniqueness, transactions — on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Conveyor, JobState, OptionError, PayloadError, Priority, UnknownJobType
from conveyor.testing import running_worker, wait_until
from tests.contract.jobs import declare


@pytest.fixture(autouse=True)
def _jobs(app: Conveyor) -> None:
    declare(app)


def test_enqueue_stores_a_pending_job_with_declared_defaults(app: Conveyor) -> None:
    job_id = app.enqueue("process_order", {"order_id": "o1", "email": "a@b.c"})
    job = app.admin.jobs.get(job_id)
    assert job.state is JobState.PENDING
    assert job.type == "process_order"
    assert job.queue == "orders"
    assert job.max_attempts == 3
    assert job.attempt == 0
    assert job.payload == {"order_id": "o1", "email": "a@b.c", "items": []}
    assert job.errors == ()
    assert abs((job.created_at - app.now()).total_seconds()) < 5


def test_invalid_payload_is_refused_naming_every_field_and_nothing_is_stored(app: Conveyor) -> None:
    with pytest.raises(PayloadError) as caught:
        app.enqueue("process_order", {"order_id": 7, "items": [{"product_id": "p", "quantity": 0}]})
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {"order_id", "email", "items.0.quantity"}
    assert "items.0.quantity" in str(caught.value)
    assert app.admin.jobs.count() == 0


def test_non_object_and_unserializable_payloads_are_refused(app: Conveyor) -> None:
    with pytest.raises(PayloadError):
        app.enqueue("plain", [1, 2])
    with pytest.raises(PayloadError):
        app.enqueue("plain", {"when": object()})
    assert app.admin.jobs.count() == 0


def test_unknown_type_and_unknown_or_bad_options_are_refused(app: Conveyor) -> None:
    with pytest.raises(UnknownJobType):
        app.enqueue("no_such_job", {})
    with pytest.raises(OptionError, match="retries"):
        app.enqueue("plain", {}, retries=3)
    with pytest.raises(OptionError, match="priority"):
        app.enqueue("plain", {}, priority="high")
    with pytest.raises(OptionError, match="delay"):
        app.enqueue("plain", {}, delay=-1)
    with pytest.raises(OptionError, match="run_at"):
        app.enqueue("plain", {}, run_at=datetime(2030, 1, 1))  # naive: ambiguous
    assert app.admin.jobs.count() == 0


def test_per_enqueue_options_override_the_declaration(app: Conveyor) -> None:
    job = app.admin.jobs.get(
        app.enqueue("process_order", {"order_id": "o", "email": "e"}, queue="urgent", priority=Priority.HIGH, max_attempts=9, timeout=12)
    )
    assert (job.queue, job.priority, job.max_attempts, job.timeout) == ("urgent", 10, 9, 12.0)


def test_delay_and_run_at_schedule_the_job(app: Conveyor) -> None:
    delayed = app.admin.jobs.get(app.enqueue("plain", {}, delay=timedelta(hours=24)))
    assert delayed.state is JobState.SCHEDULED
    assert timedelta(hours=23, minutes=59) < delayed.run_at - delayed.created_at < timedelta(hours=24, minutes=1)
    moment = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    at = app.admin.jobs.get(app.enqueue("plain", {}, run_at=moment))
    assert at.state is JobState.SCHEDULED
    assert abs((at.run_at - moment).total_seconds()) < 0.01
    past = app.admin.jobs.get(app.enqueue("plain", {}, run_at=datetime(2020, 1, 1, tzinfo=UTC)))
    assert past.state is JobState.PENDING


def test_enqueue_many_is_one_transaction_returning_ids_in_order(app: Conveyor) -> None:
    ids = app.enqueue_many([("plain", {"n": i}) for i in range(500)] + [("send_email", {"to": "x"}, {"priority": 1})])
    assert len(ids) == 501 and ids == sorted(ids)
    assert app.admin.jobs.get(ids[0]).payload == {"n": 0}
    assert app.admin.jobs.get(ids[499]).payload == {"n": 499}
    assert app.admin.jobs.get(ids[500]).priority == 1
    with pytest.raises(PayloadError):
        app.enqueue_many([("plain", {"n": 1}), ("process_order", {"bad": True})])
    assert app.admin.jobs.count() == 501



def test_enqueue_many_stores_each_rows_own_options_and_shares_the_calls(app: Conveyor) -> None:
    parent = app.enqueue("plain", {})
    moment = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    items = [
        ("plain", {"n": 0}),
        ("plain", {"n": 1}, {"delay": 3600}),
        ("plain", {"n": 2}, {"run_at": moment}),
        ("plain", {"n": 3}, {"timeout": 7, "backoff": 2.5, "queue": "other"}),
        ("plain", {"n": 4}, {"workflow_id": "wf-1", "parent_id": parent}),
        ("send_email", {"n": 5}, {"run_at": datetime(2020, 1, 1, tzinfo=UTC)}),
    ]
    jobs = [app.admin.jobs.get(i) for i in app.enqueue_many(items)]  # type: ignore[arg-type]
    assert [j.payload["n"] for j in jobs] == [0, 1, 2, 3, 4, 5]
    assert [j.state for j in jobs] == [JobState.PENDING, JobState.SCHEDULED, JobState.SCHEDULED] + [JobState.PENDING] * 3
    assert [(j.queue, j.priority, j.max_attempts) for j in jobs] == [("default", 0, 2)] * 3 + [("other", 0, 2), ("default", 0, 2), ("email", 5, 20)]  # the default attempts
    assert timedelta(minutes=59) < jobs[1].run_at - jobs[1].created_at < timedelta(minutes=61)
    assert abs((jobs[2].run_at - moment).total_seconds()) < 0.01
    assert [(j.timeout, j.backoff, j.workflow_id, j.parent_id) for j in jobs] == [(None, None, None, None)] * 3 + [
        (7.0, "2.5", None, None),
        (None, None, "wf-1", parent),
        (None, None, None, None),
    ]
    shared = [app.admin.jobs.get(i) for i in app.enqueue_many([("plain", {"n": 6}), ("send_email", {"n": 7})], timeout=3, queue="bulk")]
    assert [(j.queue, j.priority, j.timeout, j.state) for j in shared] == [("bulk", 0, 3.0, JobState.PENDING), ("bulk", 5, 3.0, JobState.PENDING)]


def test_enqueue_many_mixes_a_declared_whole_number_of_seconds_with_overrides(app: Conveyor) -> None:
    @app.job(timeout=30, unique_for=60)
    def timed(p: dict) -> None:  # type: ignore[type-arg]
        return None

    ids = app.enqueue_many([("timed", {"n": 1}), ("timed", {"n": 2}, {"timeout": 2.5, "unique_for": 0.5})])
    assert [app.admin.jobs.get(i).timeout for i in ids] == [30.0, 2.5]

def test_idempotency_key_returns_the_existing_job_and_stores_nothing(app: Conveyor) -> None:
    first = app.enqueue("plain", {"n": 1}, idempotency_key="order-1:confirm")
    again = app.enqueue("plain", {"n": 2}, idempotency_key="order-1:confirm")
    other = app.enqueue("plain", {"n": 3}, idempotency_key="order-2:confirm")
    assert again == first != other
    assert app.admin.jobs.count() == 2
    assert app.admin.jobs.get(first).payload == {"n": 1}
    many = app.enqueue_many([("plain", {}, {"idempotency_key": "order-1:confirm"}), ("plain", {}), ("plain", {}, {"idempotency_key": "k3"})])
    assert many[0] == first and many[1] != many[2]
    assert app.admin.jobs.count() == 4


def test_unique_for_deduplicates_within_the_window_only(app: Conveyor) -> None:
    first = app.enqueue("plain", {"n": 1}, unique_for=0.5)
    assert app.enqueue("plain", {"n": 1}, unique_for=0.5) == first
    assert app.enqueue("plain", {"n": 2}, unique_for=0.5) != first  # another payload is another job
    def a_new_job() -> int | None:
        job_id = app.enqueue("plain", {"n": 1}, unique_for=0.5)
        return job_id if job_id != first else None

    later = wait_until(a_new_job, timeout=5)
    assert later != first
    assert app.admin.jobs.count() == 3


def _orders_table(app: Conveyor) -> str:
    with app.transaction() as tx:
        tx.execute("CREATE TABLE shop_orders (id TEXT PRIMARY KEY)")
    return "?" if app.backend.flavour == "sqlite" else "%s"  # type: ignore[attr-defined]


def test_enqueue_joins_the_callers_transaction_commit(app: Conveyor) -> None:
    mark = _orders_table(app)
    with app.transaction() as tx:
        tx.execute(f"INSERT INTO shop_orders (id) VALUES ({mark})", ("o1",))
        job_id = app.enqueue("plain", {"order": "o1"}, connection=tx)
    assert app.admin.jobs.get(job_id).payload == {"order": "o1"}
    with app.transaction() as tx:
        assert tx.execute("SELECT count(*) FROM shop_orders").fetchone()[0] == 1


def test_enqueue_joins_the_callers_transaction_rollback(app: Conveyor) -> None:
    mark = _orders_table(app)
    with pytest.raises(RuntimeError), app.transaction() as tx:
        tx.execute(f"INSERT INTO shop_orders (id) VALUES ({mark})", ("o1",))
        app.enqueue("plain", {"order": "o1"}, connection=tx)
        app.enqueue_many([("plain", {}), ("plain", {})], connection=tx)
        raise RuntimeError("payment declined")
    assert app.admin.jobs.count() == 0
    with app.transaction() as tx:
        assert tx.execute("SELECT count(*) FROM shop_orders").fetchone()[0] == 0


def test_async_client_api(app: Conveyor) -> None:
    async def scenario() -> tuple[int, list[int]]:
        one = await app.aenqueue("plain", {"n": 1}, priority=3)
        many = await app.aenqueue_many([("plain", {"n": 2}), ("plain", {"n": 3})])
        return one, many

    one, many = asyncio.run(scenario())
    assert asyncio.run(app.admin.jobs.aget(one)).priority == 3
    assert app.admin.jobs.count() == 3 and len(many) == 2


def test_a_lone_enqueue_wakes_listeners_and_leaves_the_next_transaction_whole(app: Conveyor, database_url: str) -> None:
    """PostgreSQL writes a lone enqueue and its NOTIFY as one statement in autocommit: the wake-up
    still reaches a listener, and the pooled connection is transactional again afterwards."""
    other = Conveyor(database_url)
    woken: list[int] = []
    stop = other.backend.listen(lambda: woken.append(1))
    try:
        if app.backend.flavour == "postgres":  # type: ignore[attr-defined]
            wait_until(lambda: bool(woken), timeout=20, message="the listener to connect (it fires once then)")
            woken.clear()
        sent: list[int] = []

        def woken_or_enqueue() -> bool:  # SQLite's watcher counts from the first commit counter it reads
            if not woken:
                sent.append(app.enqueue("plain", {"n": 1}))
            return bool(woken)

        wait_until(woken_or_enqueue, timeout=20, interval=0.2, message="an enqueue's wake-up")
    finally:
        stop()
        other.close()
    mark = _orders_table(app)
    with pytest.raises(RuntimeError), app.transaction() as tx:
        tx.execute(f"INSERT INTO shop_orders (id) VALUES ({mark})", ("o2",))
        app.enqueue("plain", {"n": 2}, connection=tx)
        raise RuntimeError("payment declined")
    assert app.admin.jobs.count() == len(sent)
    with app.transaction() as tx:
        assert tx.execute("SELECT count(*) FROM shop_orders").fetchone()[0] == 0


def test_enqueues_from_another_client_commit_while_a_worker_drains(app: Conveyor, database_url: str) -> None:
    """A web request's enqueue is not starved by a worker taking the write lock back to back
    (SQLite: the worker lets announced writers go first, turns.py); nothing is lost either way."""
    app.enqueue_many([("plain", {"n": i}) for i in range(2_000)])
    client = Conveyor(database_url)
    declare(client)
    try:
        with running_worker(app, concurrency=50):
            wait_until(lambda: app.admin.jobs.count(state=JobState.COMPLETED) > 0, timeout=60, message="the drain to start")
            ids = [client.enqueue("plain", {"web": i}) for i in range(30)]
            wait_until(lambda: app.admin.jobs.count(state=JobState.COMPLETED) == 2_030, timeout=120, message="every job done")
    finally:
        client.close()
    assert len(set(ids)) == 30
    assert all(app.admin.jobs.get(i).payload == {"web": n} for n, i in enumerate(ids))
