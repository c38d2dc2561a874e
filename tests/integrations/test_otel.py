"""OpenTelemetry: spans per enqueue and run, one trace from the enqueue to the run and its children — the SDK's in-memory exporter, both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import Conveyor, JobContext
from conveyor.contrib.otel import OpenTelemetry
from conveyor.testing import running_worker, wait_until


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def declare(app: Conveyor, provider: TracerProvider) -> None:
    tracer = provider.get_tracer("shop")

    @app.job(queue="orders", max_attempts=1)
    def place(p: dict[str, Any], ctx: JobContext) -> None:
        with tracer.start_as_current_span("charge card"):  # the handler's own span
            ctx.enqueue("email", {"to": p["email"]})

    @app.job(queue="email", max_attempts=1)
    async def email(p: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    @app.job(max_attempts=1)
    def fails(p: dict[str, Any]) -> None:
        raise ValueError("card declined")


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_one_trace_from_the_request_to_the_run_and_its_child(app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    memory, provider = exporter
    declare(app, provider)
    app.use(OpenTelemetry(tracer_provider=provider))
    with provider.get_tracer("web").start_as_current_span("POST /orders") as request:
        job_id = app.enqueue("place", {"email": "a@example.com"})
    with running_worker(app):
        wait_until(lambda: spans(memory, "process email"), message="the child's run span", timeout=60)

    (send,) = spans(memory, "send orders")
    (process,) = spans(memory, "process orders")
    (charge,) = spans(memory, "charge card")
    (child,) = spans(memory, "process email")
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in (send, process, charge, child)} == {trace_id}  # type: ignore[union-attr]
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id  # type: ignore[union-attr]
    assert charge.parent is not None and charge.parent.span_id == process.context.span_id  # type: ignore[union-attr]
    assert child.parent is not None and child.parent.span_id == charge.context.span_id  # enqueued inside "charge card"  # type: ignore[union-attr]
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert dict(send.attributes or {}) == {
        "messaging.system": "conveyor", "messaging.operation.type": "send", "messaging.operation.name": "enqueue",
        "messaging.destination.name": "orders", "conveyor.job.type": "place", "messaging.message.id": str(job_id),
    }  # fmt: skip
    assert dict(process.attributes or {}) == {
        "messaging.system": "conveyor", "messaging.operation.type": "process", "messaging.operation.name": "run",
        "messaging.destination.name": "orders", "messaging.message.id": str(job_id), "conveyor.job.type": "place",
        "conveyor.job.attempt": 1,
    }  # fmt: skip
    assert app.admin.jobs.get(job_id).meta is not None and "traceparent" in app.admin.jobs.get(job_id).meta["otel"]  # type: ignore[index]


def test_batches_async_enqueue_and_failures(app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    memory, provider = exporter
    declare(app, provider)
    app.use(OpenTelemetry(tracer_provider=provider))

    async def produce() -> list[int]:
        return await app.aenqueue_many([("fails", {}), ("fails", {})])

    ids = asyncio.run(produce())
    assert app.enqueue_many([]) == [] and asyncio.run(app.aenqueue_many([])) == []  # nothing to send: no span
    (send,) = spans(memory, "send default")
    assert send.attributes is not None and send.attributes["messaging.batch.message_count"] == 2
    with running_worker(app):
        wait_until(lambda: len(spans(memory, "process default")) == 2, timeout=60)
    runs = spans(memory, "process default")
    assert {s.attributes["messaging.message.id"] for s in runs if s.attributes} == {str(i) for i in ids}
    for run in runs:
        assert run.parent is not None and run.parent.span_id == send.context.span_id  # type: ignore[union-attr]
        assert run.status.status_code is StatusCode.ERROR and "card declined" in (run.status.description or "")
        assert [e.name for e in run.events] == ["exception"]


def test_without_a_trace_a_run_starts_its_own(app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    memory, provider = exporter
    declare(app, provider)
    app.enqueue("email", {"to": "x"})  # enqueued before tracing was on: no trace context in its meta
    app.use(OpenTelemetry(tracer_provider=provider))
    with running_worker(app):
        wait_until(lambda: spans(memory, "process email"), timeout=60)
    (run,) = spans(memory, "process email")
    assert run.parent is None and trace.get_current_span() is trace.INVALID_SPAN
