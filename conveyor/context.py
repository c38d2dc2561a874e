"""JobContext: what a running handler may know and do (ids, logger, enqueue, once, progress)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import Lease, NewJob
from conveyor.deprecation import deprecated
from conveyor.job import Job
from conveyor.result import encode_result
from conveyor.storable import json_problem
from conveyor.workflow import NamedJob, PendingJob

if TYPE_CHECKING:
    from conveyor.app import Conveyor

MISSING = object()
_CREATE = threading.Lock()  # the loop and a handler's thread may both ask for ``cancelled`` first


class JobContext:
    """Handed to a handler that takes a second parameter.

    >>> @app.job()
    ... def send(p: Email, ctx: JobContext) -> None:
    ...     ctx.log.info("attempt %s", ctx.attempt)
    ...     receipt = ctx.once("smtp", smtp_send, p)   # skipped on a retry once done
    ...     ctx.enqueue(audit, Receipt(id=receipt))     # committed with this job's completion
    """

    def __init__(self, app: Conveyor, job: Job, worker_id: str) -> None:
        self.app = app
        self.job = job
        self.worker_id = worker_id
        self.lease = Lease(job.id, job.lease_token)
        self.children: list[NewJob] = []
        held_for = (job.lease_expires_at - job.attempted_at).total_seconds() if job.lease_expires_at and job.attempted_at else 1e9
        self.lease_deadline = time.monotonic() + held_for  # this worker's view of when its lease runs out
        self.pending_progress: Any = MISSING
        self._cancelled: threading.Event | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    # Made on first use: most runs never touch them, and they are the costliest part of a context.

    @property
    def cancelled(self) -> threading.Event:
        """Set at timeout, lease loss or shutdown: a sync handler may poll it to stop early."""
        if self._cancelled is None:
            with _CREATE:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
        return self._cancelled

    def is_cancelled(self) -> bool:
        """Whether ``cancelled`` is set, without making the event (the executor asks before every sync start)."""
        return self._cancelled is not None and self._cancelled.is_set()

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger carrying the job's id, type, attempt and workflow."""
        if self._log is None:
            job = self.job
            self._log = logging.LoggerAdapter(
                logging.getLogger(f"conveyor.job.{job.type}"),
                {"job_id": job.id, "job_type": job.type, "attempt": job.attempt, "workflow_id": job.workflow_id},
            )
        return self._log

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def workflow_id(self) -> str | None:
        return self.job.workflow_id

    def enqueue(self, job_type: str | NamedJob, payload: Any = None, **options: Any) -> PendingJob:
        """Enqueue a follow-up job (its type's handle or name), stored only if this run completes (same transaction).

        It joins this job's workflow with this job as its parent. The payload is validated
        now, so a bad one fails this run rather than vanishing later. The returned reference
        can be named in a later ``depends_on`` (fan-in over jobs enqueued in this run).
        """
        options.setdefault("workflow_id", self.job.workflow_id)
        options.setdefault("parent_id", self.job.id)
        self.children.append(self.app.new_job(job_type, payload, options))
        return PendingJob(len(self.children) - 1)

    def parent_results(self) -> dict[int, Any]:
        """Results of the jobs this one depended on, by job id (fan-in callbacks read them here)."""
        return {pid: result for pid, _type, _state, result in self.app.backend.parent_results(self.job.id)}

    async def aparent_results(self) -> dict[int, Any]:
        return await asyncio.to_thread(self.parent_results)

    def progress(self, value: Any) -> None:
        """Record progress (any JSON value a database can store); written with the next lease renewal."""
        problem = json_problem(json.dumps(value))
        if problem is not None:
            raise ValueError(f"progress {problem[1]}")
        self.pending_progress = value

    def once(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` unless an earlier attempt of this job already finished step ``key``.

        The step's return value is stored as JSON (as pydantic writes it: a ``Decimal`` comes back
        as its text, a model as an object) and returned on later attempts; a value that cannot be
        stored fails the run with ``ResultError`` (see conveyor/result.py). For sync handlers (it
        blocks); async handlers use ``await ctx.aonce``.
        """
        backend = self.app.backend
        done, stored = backend.mark_get(self.job.id, key)
        if done:
            return None if stored is None else json.loads(stored)
        value = fn(*args, **kwargs)
        backend.mark_put(self.lease, key, encode_result(value, self.app.settings.max_result_bytes))
        return value

    async def aonce(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``once`` for async handlers: ``fn`` may be sync or async."""
        backend = self.app.backend
        done, stored = await asyncio.to_thread(backend.mark_get, self.job.id, key)
        if done:
            return None if stored is None else json.loads(stored)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        text = encode_result(value, self.app.settings.max_result_bytes)
        await asyncio.to_thread(backend.mark_put, self.lease, key, text)
        return value

    async def once_async(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Deprecated name of ``aonce`` (async twins are prefixed ``a``); kept for one release."""
        deprecated("ctx.once_async", "ctx.aonce")
        return await self.aonce(key, fn, *args, **kwargs)
