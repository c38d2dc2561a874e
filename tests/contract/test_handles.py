"""Job handles: ``@app.job`` returns a handle that enqueues its type and is still the handler — both backends."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from conveyor import Conveyor, JobContext, JobHandle, JobState, OptionError, PayloadError, Priority, UnknownJobType, chain
from conveyor.testing import running_worker, wait_until


class Order(BaseModel):
    order_id: str
    cents: int = 0


class Receipt(BaseModel):
    order_id: str


def declare(app: Conveyor) -> tuple[JobHandle[Order, ..., str], JobHandle[Receipt, ..., None]]:
    @app.job(queue="payments", max_attempts=3)
    def charge(p: Order, ctx: JobContext) -> str:
        ctx.enqueue(send_receipt, Receipt(order_id=p.order_id))  # a handle, as ctx.enqueue's job type
        return f"charged {p.order_id}"

    @app.job(name="receipts.send")
    async def send_receipt(p: Receipt) -> None:
        await asyncio.sleep(0)

    return charge, send_receipt


def test_a_handle_is_still_the_plain_handler(app: Conveyor) -> None:
    charge, send_receipt = declare(app)

    class Ctx:
        def enqueue(self, *args: object) -> None:
            pass

    assert charge(Order(order_id="o1"), Ctx()) == "charged o1"  # type: ignore[arg-type]
    assert asyncio.run(send_receipt(Receipt(order_id="o1"))) is None
    assert charge.__name__ == "charge" and send_receipt.name == "receipts.send"
    assert app.admin.jobs.count() == 0


def test_enqueue_takes_the_model_or_a_dict_validated_as_by_name(app: Conveyor) -> None:
    charge, _ = declare(app)
    first = app.admin.jobs.get(charge.enqueue(Order(order_id="o1", cents=5)))
    second = app.admin.jobs.get(charge.enqueue({"order_id": "o2"}, priority=Priority.HIGH))
    assert (first.type, first.queue, first.max_attempts, first.payload) == ("charge", "payments", 3, {"order_id": "o1", "cents": 5})
    assert (second.priority, second.payload) == (Priority.HIGH, {"order_id": "o2", "cents": 0})
    with pytest.raises(PayloadError) as caught:
        charge.enqueue({"cents": "many"})
    assert {e["field"] for e in caught.value.errors} == {"order_id", "cents"}
    with pytest.raises(OptionError, match="prority"):
        charge.enqueue(Order(order_id="o3"), prority=5)  # type: ignore[call-arg]
    assert app.admin.jobs.count() == 2


def test_options_are_bound_once_and_a_call_overrides_them(app: Conveyor) -> None:
    charge, _ = declare(app)
    urgent = charge.options(queue="urgent", priority=Priority.CRITICAL)
    a = app.admin.jobs.get(urgent.enqueue(Order(order_id="o1")))
    b = app.admin.jobs.get(urgent.enqueue(Order(order_id="o2"), priority=Priority.LOW))
    c = app.admin.jobs.get(charge.enqueue(Order(order_id="o3")))  # the handle itself is unchanged
    assert (a.queue, a.priority) == ("urgent", Priority.CRITICAL)
    assert (b.queue, b.priority) == ("urgent", Priority.LOW)
    assert (c.queue, c.priority) == ("payments", 0)


def test_using_a_transaction_commits_and_rolls_back_with_it(app: Conveyor) -> None:
    charge, _ = declare(app)
    with app.transaction() as tx:
        kept = charge.using(tx).enqueue(Order(order_id="kept"))
    with pytest.raises(RuntimeError), app.transaction() as tx:
        charge.options(priority=1).using(tx).enqueue_many([Order(order_id="lost1"), {"order_id": "lost2"}])
        raise RuntimeError("the caller's transaction fails")
    assert [j.id for j in app.admin.jobs.list()] == [kept]
    with app.transaction() as tx, pytest.raises(OptionError, match="aenqueue cannot join a transaction"):
        asyncio.run(charge.using(tx).aenqueue(Order(order_id="async")))


def test_enqueue_many_and_the_async_twins(app: Conveyor) -> None:
    charge, send_receipt = declare(app)
    ids = charge.enqueue_many([Order(order_id="o1"), {"order_id": "o2"}], queue="bulk")
    ids.append(asyncio.run(send_receipt.aenqueue(Receipt(order_id="o3"), delay=60)))
    ids += asyncio.run(send_receipt.aenqueue_many([{"order_id": "o4"}]))
    jobs = {j.id: j for j in app.admin.jobs.list()}
    assert sorted(jobs) == sorted(ids)
    assert [(jobs[i].type, jobs[i].queue, jobs[i].state) for i in ids] == [
        ("charge", "bulk", JobState.PENDING),
        ("charge", "bulk", JobState.PENDING),
        ("receipts.send", "default", JobState.SCHEDULED),
        ("receipts.send", "default", JobState.PENDING),
    ]


def test_handles_name_the_type_in_ctx_enqueue_workflow_steps_by_name_enqueue_and_cron(app: Conveyor) -> None:
    charge, send_receipt = declare(app)
    handle = app.enqueue_workflow(chain(charge.step(Order(order_id="w1")), send_receipt.step({"order_id": "w1"}, priority=3)))
    by_name = app.enqueue(send_receipt, {"order_id": "n1"})  # app.enqueue takes a handle too
    schedule = app.cron("0 0 * * *", send_receipt, {"order_id": "nightly"})
    assert schedule.job_type == "receipts.send"
    with running_worker(app):
        wait_until(lambda: app.admin.workflows.status(handle.id).state == "completed", message="the workflow to complete")
        wait_until(lambda: app.admin.jobs.count(state=JobState.COMPLETED) == 4, message="every job to complete")
    status = app.admin.workflows.status(handle.id)
    assert sorted((j.type, j.payload["order_id"]) for j in status.jobs) == [("charge", "w1"), ("receipts.send", "w1"), ("receipts.send", "w1")]
    assert app.admin.jobs.get(handle.job_ids[0]).result == "charged w1"
    assert app.admin.jobs.get(by_name).state is JobState.COMPLETED
    child = next(j for j in status.jobs if j.parent_id == handle.job_ids[0])  # charge's ctx.enqueue(send_receipt, ...)
    assert child.type == "receipts.send"


def test_a_function_that_is_not_a_declared_handle_is_refused_by_name(app: Conveyor) -> None:
    def undeclared(p: Order) -> None: ...

    with pytest.raises(UnknownJobType, match="undeclared"):
        app.enqueue(undeclared, {"order_id": "o1"})  # type: ignore[arg-type]
    assert app.admin.jobs.count() == 0
