"""OpenTelemetry tracing for Conveyor (extra ``otel``): a span per enqueue and per run, one trace across them.

>>> from conveyor.contrib.otel import OpenTelemetry
>>> app.use(OpenTelemetry())                  # the global tracer provider, or tracer_provider=...

- ``send <queue>`` (PRODUCER) around each ``enqueue``/``enqueue_many``/``aenqueue``/workflow insert;
  the W3C trace context of that span is stored in each job's meta.
- ``process <queue>`` (CONSUMER) around each run, a child of the enqueuing span (so one trace
  goes from the web request to the job's run), current while the handler runs: spans the handler
  makes, and jobs it enqueues with ``ctx.enqueue``, belong to it.
- The usual messaging attributes: ``messaging.system`` ("conveyor"), ``messaging.operation.type``
  and ``.name``, ``messaging.destination.name`` (the queue), ``messaging.message.id`` (the job id),
  ``messaging.batch.message_count``; and ``conveyor.job.type``, ``conveyor.job.attempt``. A run
  that raises records the exception and sets the span's status to ERROR.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from conveyor.backends.base import NewJob
from conveyor.middleware import Middleware, meta_text

if TYPE_CHECKING:
    from conveyor.context import JobContext

META_KEY = "otel"  # the job's meta entry holding the carrier (traceparent, tracestate, baggage)
SYSTEM = "conveyor"


class OpenTelemetry(Middleware):
    """Spans for enqueues and runs, the trace context carried in the job's meta."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        from conveyor import __version__

        self.tracer = trace.get_tracer("conveyor", __version__, tracer_provider=tracer_provider)

    # -- producing ----------------------------------------------------------------------

    def prepare(self, job: NewJob, meta: dict[str, Any]) -> None:
        """The current context (a run enqueuing its children, a request) for jobs that no enqueue span re-stamps."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            meta[META_KEY] = carrier

    def enqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], list[int]]) -> list[int]:
        with self._send(jobs) as (span, stamped):
            ids = call_next(stamped)
            self._ids(span, ids)
            return ids

    async def aenqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], Awaitable[list[int]]]) -> list[int]:
        with self._send(jobs) as (span, stamped):
            ids = await call_next(stamped)
            self._ids(span, ids)
            return ids

    @contextmanager
    def _send(self, jobs: Sequence[NewJob]) -> Iterator[tuple[trace.Span, list[NewJob]]]:
        queues = sorted({j.queue for j in jobs})
        types = {j.type for j in jobs}
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "enqueue",
            "messaging.destination.name": queues[0] if len(queues) == 1 else ",".join(queues),
            "conveyor.job.type": next(iter(types)) if len(types) == 1 else "(many)",
        }
        if len(jobs) > 1:
            attributes["messaging.batch.message_count"] = len(jobs)
        name = f"send {attributes['messaging.destination.name']}"
        with self.tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield span, [restamp(j, carrier) for j in jobs]

    @staticmethod
    def _ids(span: trace.Span, ids: list[int]) -> None:
        if len(ids) == 1:
            span.set_attribute("messaging.message.id", str(ids[0]))

    # -- consuming ----------------------------------------------------------------------

    def run(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
        with self._process(ctx):
            return call_next()

    async def arun(self, ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        with self._process(ctx):
            return await call_next()

    @contextmanager
    def _process(self, ctx: JobContext) -> Iterator[trace.Span]:
        job = ctx.job
        carrier = (job.meta or {}).get(META_KEY)
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "conveyor.job.type": job.type,
            "conveyor.job.attempt": job.attempt,
        }
        with self.tracer.start_as_current_span(
            f"process {job.queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes, record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise


def restamp(job: NewJob, carrier: dict[str, str]) -> NewJob:
    meta = json.loads(job.meta) if job.meta else {}
    meta[META_KEY] = carrier
    return replace(job, meta=meta_text(meta))
