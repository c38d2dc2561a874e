"""Waiting for a job's or a workflow's end, woken by the store's change feed, never a tight poll.

On PostgreSQL every transaction that finishes jobs sends one NOTIFY (with the completions'
write, in the same round trip); on SQLite the change watch sees any commit to the file within
a few milliseconds. A waiter subscribes first, then reads the job, then sleeps until the next
such wake-up, so no finish can slip between its read and its sleep. A slow fallback look
covers a notification lost while the LISTEN connection was being re-established.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from conveyor.errors import JobFailed, JobNotFound, ResultTimeout, WorkflowFailed
from conveyor.job import Job, JobState

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.workflow import WorkflowStatus

T = TypeVar("T")

FALLBACK_LOOK = 1.0
"""Seconds between looks when no wake-up arrives (a hint may be lost; the wait must not be)."""


class Pending:
    """What a check returns while the thing waited for is not finished yet (its current state)."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def wait(app: Conveyor, check: Callable[[], T | Pending], timeout: float | None, what: str) -> T:
    """Call ``check`` after each wake-up until it returns something other than ``Pending``."""
    woken = threading.Event()
    stop = app.backend.listen_finished(woken.set)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            woken.clear()
            found = check()
            if not isinstance(found, Pending):
                return found
            remaining = FALLBACK_LOOK if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(what, timeout or 0.0, found.state)
            woken.wait(min(remaining, FALLBACK_LOOK))
    finally:
        stop()


async def await_(app: Conveyor, check: Callable[[], T | Pending], timeout: float | None, what: str) -> T:
    """``wait`` for async callers: the wait is an asyncio event, the reads run on a thread."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(woken.set)

    stop = await asyncio.to_thread(app.backend.listen_finished, wake)
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while True:
            woken.clear()
            found = await asyncio.to_thread(check)
            if not isinstance(found, Pending):
                return found
            remaining = FALLBACK_LOOK if deadline is None else deadline - loop.time()
            if remaining <= 0:
                raise ResultTimeout(what, timeout or 0.0, found.state)
            try:
                await asyncio.wait_for(woken.wait(), min(remaining, FALLBACK_LOOK))
            except TimeoutError:
                pass
    finally:
        stop()


def job_check(app: Conveyor, job_id: int) -> Callable[[], Job | Pending]:
    """The job once finished: completed returns it; dead, cancelled or expired raise JobFailed."""

    def check() -> Job | Pending:
        job = app.backend.job_get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.finished:
            return Pending(job.state.value)
        if job.state is not JobState.COMPLETED:
            raise JobFailed(job)
        return job

    return check


def workflow_check(app: Conveyor, workflow_id: str) -> Callable[[], WorkflowStatus | Pending]:
    """The workflow once every job finished: completed returns its status; otherwise WorkflowFailed
    naming the first job that did not complete."""

    def check() -> WorkflowStatus | Pending:
        status = app.admin.workflows.status(workflow_id)
        if status.state == "running":
            return Pending("running")
        if status.state != "completed":
            failed = [j for j in status.jobs if j.state is JobState.DEAD] or [j for j in status.jobs if j.state is not JobState.COMPLETED]
            raise WorkflowFailed(status, failed[0])
        return status

    return check


