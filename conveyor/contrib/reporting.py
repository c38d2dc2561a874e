"""Error reporting: each failed run goes to a logger with its traceback and the job's id, type, queue and attempt.

>>> from conveyor.contrib.reporting import ErrorReporter
>>> app.use(ErrorReporter())        # logger "conveyor.errors": dead runs at ERROR, retried ones at WARNING

Any log-based error tracker picks these up; Sentry through its logging integration (see
docs/middleware.md): a job that ends dead becomes a Sentry event with the exception and its
stack, a retried failure a breadcrumb, each tagged with the job's fields.

Failures raised by the handler are reported with the exception object itself (``exc_info``), so
trackers see the real type and frames; failures that never reached the handler (a timeout, a
payload that no longer validates, an unknown type) with the recorded error text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from conveyor.middleware import Middleware, RunInfo

if TYPE_CHECKING:
    from conveyor.context import JobContext


class ErrorReporter(Middleware):
    """Log every failed run: ``dead_level`` when it will not be retried, ``retry_level`` when it will."""

    def __init__(self, logger: logging.Logger | str = "conveyor.errors", dead_level: int = logging.ERROR,
                 retry_level: int = logging.WARNING) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.dead_level = dead_level
        self.retry_level = retry_level
        self._raised: dict[tuple[int, int], BaseException] = {}
        self._lock = threading.Lock()

    def run(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
        try:
            return call_next()
        except Exception as exc:
            self._keep(ctx, exc)
            raise

    async def arun(self, ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call_next()
        except Exception as exc:
            self._keep(ctx, exc)
            raise

    def _keep(self, ctx: JobContext, exc: BaseException) -> None:
        with self._lock:
            self._raised[(ctx.job.id, ctx.job.attempt)] = exc

    def finished(self, run: RunInfo) -> None:
        job = run.job
        with self._lock:
            exc = self._raised.pop((job.id, job.attempt), None)
        if run.outcome not in ("retry", "dead"):
            return
        level = self.retry_level if run.will_retry else self.dead_level
        if not self.logger.isEnabledFor(level):
            return
        fields = {"job_id": job.id, "job_type": job.type, "queue": job.queue, "attempt": job.attempt,
                  "max_attempts": job.max_attempts, "outcome": run.outcome, "workflow_id": job.workflow_id}
        what = "failed, will retry" if run.will_retry else "failed for good (dead)"
        message = f"job {job.id} {job.type} (queue {job.queue}, attempt {job.attempt}/{job.max_attempts}) {what}: {run.error}"
        if exc is not None:
            self.logger.log(level, message, exc_info=(type(exc), exc, exc.__traceback__), extra=fields)
        else:
            self.logger.log(level, message + (f"\n{run.traceback}" if run.traceback else ""), extra=fields)
