"""Middleware: hooks around each enqueue and each run, for tracing, timing, context and error reporting.

>>> class Timing(Middleware):
...     def run(self, ctx, call_next):                 # sync handlers, on the handler's thread
...         started = time.monotonic()
...         try:
...             return call_next()
...         finally:
...             ctx.log.info("took %.3f s", time.monotonic() - started)
>>> app.use(Timing(), OpenTelemetry())

The hooks, and when each is called:

``prepare(job, meta)``
    Once per new job, as its row is built: in ``enqueue``/``enqueue_many``/``aenqueue``/workflows
    on the enqueuing thread, and in ``ctx.enqueue`` on the handler's thread (inside the ``run``
    hooks of the job that enqueues it). Put what the run needs to know into ``meta`` (a dict of
    JSON values); it is stored with the job and read back as ``job.meta`` / ``ctx.job.meta``.
``enqueue(jobs, call_next)`` / ``aenqueue(jobs, call_next)``
    Around the insert of ``app.enqueue``/``enqueue_many``/``enqueue_workflow`` (sync) and
    ``aenqueue``/``aenqueue_many`` (async): ``call_next(jobs)`` writes the rows and returns their
    ids; pass it changed copies (``dataclasses.replace(job, meta=...)``) to change what is stored.
``run(ctx, call_next)`` / ``arun(ctx, call_next)``
    Around the handler: ``run`` for sync handlers (on the handler's thread), ``arun`` for async
    ones (on the worker's event loop). ``call_next()`` calls the handler (the next middleware
    first) and returns its result or raises its error. Batch handlers are not wrapped.
``finished(run)``
    After every run, with its outcome (completed, retry, dead, snoozed, cancelled), the error and
    traceback if any, and its duration: also for runs that never reached the handler (a payload
    that no longer validates, a timeout, an unknown type). On the worker's event loop: keep it short.

Order: middlewares apply in the order given to ``app.use``; the first is the outermost around
``enqueue``/``run`` (it sees the others' work inside its own) and its ``prepare`` runs first.
A middleware that raises in ``prepare`` or ``enqueue`` fails the enqueue (nothing is stored); one
that raises around a run fails that run like the handler would; an error in ``finished`` is
logged and ignored. The events (``app.on("completed")``...) are unchanged and fire after the
outcome is stored.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import NewJob
from conveyor.errors import DeclarationError, OptionError
from conveyor.storable import storable_json

if TYPE_CHECKING:
    from conveyor.context import JobContext
    from conveyor.job import Job

log = logging.getLogger("conveyor.middleware")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A finished run, for ``Middleware.finished``."""

    job: Job  # as claimed (its attempt is this run's)
    outcome: str  # completed | retry | dead | snoozed | cancelled
    duration: float  # seconds, from claim to decision
    error: str | None = None  # "Type: message"
    traceback: str | None = None
    result: Any = None

    @property
    def will_retry(self) -> bool:
        return self.outcome == "retry"


class Middleware:
    """Base class: override the hooks you need; each default passes straight through."""

    def prepare(self, job: NewJob, meta: dict[str, Any]) -> None:
        return None

    def enqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], list[int]]) -> list[int]:
        return call_next(jobs)

    async def aenqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], Awaitable[list[int]]]) -> list[int]:
        return await call_next(jobs)

    def run(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
        return call_next()

    async def arun(self, ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        return await call_next()

    def finished(self, run: RunInfo) -> None:
        return None


class Chain:
    """An app's middlewares, in order, applied at each hook point (nothing at all when empty)."""

    def __init__(self) -> None:
        self.items: tuple[Middleware, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, *middlewares: Middleware) -> None:
        for m in middlewares:
            if not isinstance(m, Middleware):
                raise DeclarationError(f"app.use takes Middleware instances (subclass conveyor.Middleware), not {m!r}")
        self.items += middlewares

    def prepared(self, rows: list[NewJob]) -> list[NewJob]:
        """Each row with the meta the middlewares set (rows nobody annotated stay as they are)."""
        if not self.items:
            return rows
        out = []
        for row in rows:
            meta: dict[str, Any] = json.loads(row.meta) if row.meta else {}
            for m in self.items:
                m.prepare(row, meta)
            out.append(replace(row, meta=meta_text(meta)) if meta else row)
        return out

    def enqueue(self, rows: Sequence[NewJob], insert: Callable[[Sequence[NewJob]], list[int]]) -> list[int]:
        call = insert
        for m in reversed(self.items):
            call = functools.partial(m.enqueue, call_next=call)
        return call(rows)

    async def aenqueue(self, rows: Sequence[NewJob], insert: Callable[[Sequence[NewJob]], Awaitable[list[int]]]) -> list[int]:
        call = insert
        for m in reversed(self.items):
            call = functools.partial(m.aenqueue, call_next=call)
        return await call(rows)

    def wrap(self, func: Callable[..., Any], is_async: bool, ctx: JobContext) -> Callable[..., Any]:
        """``func`` with the run hooks around it, same signature (the executor calls it as it would the handler)."""
        if not self.items:
            return func
        items = self.items
        if is_async:

            async def arun(*args: Any) -> Any:
                async def handler() -> Any:
                    return await func(*args)

                call: Callable[[], Awaitable[Any]] = handler
                for m in reversed(items):
                    call = _abind(m.arun, ctx, call)
                return await call()

            return arun

        def run(*args: Any) -> Any:
            call: Callable[[], Any] = lambda: func(*args)
            for m in reversed(items):
                call = _bind(m.run, ctx, call)
            return call()

        return run

    def finished(self, run: RunInfo) -> None:
        for m in self.items:
            try:
                m.finished(run)
            except Exception:
                log.exception("middleware %r failed in finished() for job %s", m, run.job.id)


def meta_text(meta: dict[str, Any]) -> str:
    """Meta as stored: JSON that both databases keep (a NUL or lone surrogate becomes U+FFFD)."""
    try:
        text = json.dumps(meta, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise OptionError("meta", f"middleware set a value that is not JSON ({exc}); meta holds JSON values only") from None
    return storable_json(text)


def _bind(hook: Callable[[Any, Callable[[], Any]], Any], subject: Any, call_next: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: hook(subject, call_next)


def _abind(
    hook: Callable[[Any, Callable[[], Awaitable[Any]]], Awaitable[Any]], subject: Any, call_next: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    return lambda: hook(subject, call_next)
