"""conveyor.testing for users: inline mode, the in-memory store, assertions and drain — on both backends."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from pydantic import BaseModel, Field

from conveyor import Conveyor, JobContext, JobState
from conveyor.testing import JobFailed, assert_enqueued, assert_not_enqueued, drain, enqueued, inline


class Order(BaseModel):
    order_id: str
    quantity: int = Field(gt=0)


def declare(app: Conveyor, calls: list[Any]) -> None:
    attempts: dict[str, int] = {}

    @app.job(queue="orders", max_attempts=3)
    def place(p: Order, ctx: JobContext) -> str:
        calls.append(("place", p.order_id, ctx.attempt))
        ctx.enqueue("notify", {"order_id": p.order_id})
        return f"placed {p.order_id}"

    @app.job(max_attempts=3)
    def flaky(p: dict[str, Any]) -> None:
        attempts[p["key"]] = attempts.get(p["key"], 0) + 1
        calls.append(("flaky", attempts[p["key"]]))
        if attempts[p["key"]] < p["fail_times"] + 1:
            raise ConnectionError(f"attempt {attempts[p['key']]} lost the connection")

    @app.job()
    def notify(p: dict[str, Any]) -> None:
        calls.append(("notify", p["order_id"]))


def test_inline_runs_the_job_and_its_children_before_enqueue_returns(app: Conveyor) -> None:
    calls: list[Any] = []
    declare(app, calls)
    with inline(app):
        job_id = app.enqueue("place", Order(order_id="o1", quantity=1))
        assert calls == [("place", "o1", 1), ("notify", "o1")]
    job = app.admin.jobs.get(job_id)
    assert job.state is JobState.COMPLETED and job.result == "placed o1"
    assert_enqueued(app, "notify", {"order_id": "o1"}, count=1, state="completed")


def test_inline_retries_at_once_and_raises_when_a_job_dies(app: Conveyor) -> None:
    calls: list[Any] = []
    declare(app, calls)
    with inline(app) as mode:
        app.enqueue("flaky", {"key": "a", "fail_times": 2})  # third attempt succeeds
        assert calls == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
        with pytest.raises(JobFailed, match=r"(?s)ended dead after 3 attempt.*ConnectionError: attempt 3 lost"):
            app.enqueue("flaky", {"key": "b", "fail_times": 5})
        mode.settle()  # nothing new died: no second raise
    assert [j.state for j in enqueued(app, "flaky")] == [JobState.COMPLETED, JobState.DEAD]


def test_inline_validates_as_a_worker_does(app: Conveyor) -> None:
    declare(app, [])
    with inline(app), pytest.raises(Exception, match="quantity"):
        app.enqueue("place", {"order_id": "o1", "quantity": 0})
    assert_not_enqueued(app, "place")


def test_inline_in_a_transaction_runs_at_commit_and_not_after_rollback(app: Conveyor) -> None:
    calls: list[Any] = []
    declare(app, calls)
    with inline(app):
        with app.transaction() as tx:
            app.enqueue("notify", {"order_id": "o1"}, connection=tx)
            assert calls == []  # not yet: the transaction is open
        assert calls == [("notify", "o1")]
        with pytest.raises(RuntimeError), app.transaction() as tx:
            app.enqueue("notify", {"order_id": "o2"}, connection=tx)
            raise RuntimeError("rolled back")
    assert calls == [("notify", "o1")]


def test_inline_with_async_enqueue(app: Conveyor) -> None:
    calls: list[Any] = []
    declare(app, calls)

    async def scenario() -> None:
        await app.aenqueue("notify", {"order_id": "a1"})
        await app.aenqueue_many([("notify", {"order_id": "a2"})])

    with inline(app):
        asyncio.run(scenario())
        assert calls == [("notify", "a1"), ("notify", "a2")]


def test_assert_enqueued_explains_what_it_found(app: Conveyor) -> None:
    declare(app, [])
    app.enqueue("place", {"order_id": "o1", "quantity": 2})
    assert [j.payload["order_id"] for j in assert_enqueued(app, "place", Order(order_id="o1", quantity=2))] == ["o1"]
    assert_enqueued(app, "place", {"order_id": "o1"}, queue="orders", state="pending")
    with pytest.raises(AssertionError, match=r"(?s)expected 2 'place'.*found 1.*pending queue=orders payload=\{'order_id': 'o1'"):
        assert_enqueued(app, "place", {"order_id": "o1"}, count=2)
    with pytest.raises(AssertionError, match="expected no 'place'"):
        assert_not_enqueued(app, "place", {"order_id": "o1"})


def test_drain_runs_due_jobs_and_returns_the_dead(app: Conveyor) -> None:
    calls: list[Any] = []
    declare(app, calls)
    app.enqueue("notify", {"order_id": "o1"})
    app.enqueue("flaky", {"key": "c", "fail_times": 9}, max_attempts=1)
    later = app.enqueue("notify", {"order_id": "later"}, delay=3600)
    dead = drain(app)
    assert [j.type for j in dead] == ["flaky"]
    assert ("notify", "o1") in calls and app.admin.jobs.get(later).state is JobState.SCHEDULED


def test_memory_store_is_private_fast_and_shared_by_threads() -> None:
    app = Conveyor("sqlite:///:memory:")
    other = Conveyor("sqlite:///:memory:")
    try:
        declare(app, [])
        declare(other, [])
        threads = [threading.Thread(target=lambda: [app.enqueue("notify", {"order_id": str(i)}) for i in range(20)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert app.admin.jobs.count() == 80 and other.admin.jobs.count() == 0
        with inline(app):
            app.enqueue("notify", {"order_id": "x"})
        assert app.admin.jobs.count(state="completed") == 81  # the inline worker drained the backlog too
        path = app.backend.path  # type: ignore[attr-defined]
    finally:
        app.close()
        other.close()
    assert not os.path.exists(path)  # removed with the store
