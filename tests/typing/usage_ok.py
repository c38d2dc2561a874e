"""Correct use of job handles: ``mypy --strict`` must pass this file (tests/typing/test_mypy_usage.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from conveyor import BatchContext, Conveyor, JobContext, Priority, chain, group

app = Conveyor("sqlite:///typing.db")


class Order(BaseModel):
    order_id: str


class Email(BaseModel):
    to: str


@app.job(queue="payments", max_attempts=3, timeout=30)
async def charge(p: Order, ctx: JobContext) -> dict[str, str]:
    ctx.enqueue(send_email, Email(to="a@example.com"), priority=Priority.HIGH)
    return {"order_id": p.order_id}


@app.job()
def send_email(p: Email) -> None: ...


@app.job(batch=10, rate_limit="120/m")
def send_emails(ps: list[Email], ctx: BatchContext) -> None: ...


def produce(tx: Any) -> list[int]:
    ids = [
        charge.enqueue(Order(order_id="o-1")),
        charge.enqueue({"order_id": "o-2"}, priority=Priority.HIGH, delay=timedelta(seconds=5)),
        charge.enqueue(Order(order_id="o-3"), connection=tx, idempotency_key="charge:o-3"),
        send_emails.enqueue(Email(to="b@example.com")),
        app.enqueue("send_email", {"to": "c@example.com"}),  # by name, for producers without the handlers
    ]
    urgent = send_email.options(queue="urgent", priority=Priority.CRITICAL)
    ids.append(urgent.using(tx).enqueue(Email(to="d@example.com")))
    ids += send_email.enqueue_many([Email(to="e@example.com"), {"to": "f@example.com"}], queue="bulk")
    app.enqueue_workflow(chain(charge.step(Order(order_id="o-4")), group(send_email.step(Email(to="g@example.com")))))
    return ids


async def produce_async() -> int:
    ids = await send_email.aenqueue_many([Email(to="h@example.com")])
    return await charge.aenqueue(Order(order_id="o-5"), unique_for=60) + len(ids)


def unit_test_of_a_handler() -> None:
    send_email(Email(to="i@example.com"))  # the handle is still the plain handler
