"""Helpers for tests (Conveyor's and its users'): inline mode, assertions on what was enqueued, draining.

>>> app = Conveyor("sqlite:///:memory:")          # a private store in RAM, shared by this process's threads
>>> with inline(app):                            # every enqueue runs its job before it returns
...     app.enqueue("send_confirmation", {"order_id": "o1"})
>>> assert_enqueued(app, "send_confirmation", {"order_id": "o1"}, state="completed")

Inline mode runs jobs on a real worker (on a thread of this process), so a job goes through what
a production worker does: its payload validated again at claim, its timeout, its retries (with
no wait between attempts), its events, the jobs it enqueues. A job that ends dead raises
``JobFailed`` in the test that enqueued it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel

from conveyor.app import Conveyor
from conveyor.job import Job, JobState
from conveyor.worker import Worker

T = TypeVar("T")
LEFT = [JobState.PENDING, JobState.RUNNING]


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> T:
    """Poll ``check`` until it returns something truthy, and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or check}")
        time.sleep(interval)


@contextmanager
def running_worker(app: Conveyor, **options: Any) -> Iterator[Worker]:
    """A worker on a background thread for the duration of the block, stopped gracefully after."""
    options.setdefault("install_signals", False)
    options.setdefault("poll_interval", 0.05)
    worker = Worker(app, **options)
    thread = threading.Thread(target=worker.run, name="conveyor-test-worker", daemon=True)
    thread.start()
    if not worker.started.wait(15):
        raise AssertionError("worker did not start within 15 s")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)


def idle(app: Conveyor) -> bool:
    """No job is pending, running, or scheduled and already due (a retry whose wait is over)."""
    if app.admin.jobs.count(state=LEFT):
        return False
    now = app.now()
    return not any(job.run_at <= now for job in app.admin.jobs.list(state=JobState.SCHEDULED, limit=10_000))


def drain(app: Conveyor, timeout: float = 30.0, **options: Any) -> list[Job]:
    """Run a worker until no job is pending, running, or scheduled and due; return the jobs that died meanwhile.

    Jobs scheduled for later (a ``delay``, a retry's backoff) stay where they are.
    """
    before = {j.id for j in app.admin.jobs.list(state=JobState.DEAD, limit=100_000)}
    with running_worker(app, **options):
        wait_until(lambda: idle(app), timeout=timeout, message="the queue to drain")
    return [j for j in app.admin.jobs.list(state=JobState.DEAD, limit=100_000) if j.id not in before]


class JobFailed(AssertionError):
    """A job run in inline mode ended dead (its attempts spent, or it could not run)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        last = job.last_error
        detail = (last.traceback or last.error) if last else "no error recorded"
        super().__init__(f"job {job.id} ({job.type}) ended dead after {job.attempt} attempt(s):\n{detail}")


class Inline:
    """What ``inline(app)`` yields: ``settle()`` runs what was enqueued where inline mode cannot see the commit."""

    def __init__(self, app: Conveyor, raise_errors: bool, timeout: float) -> None:
        self.app = app
        self.raise_errors = raise_errors
        self.timeout = timeout
        self.dead_seen = {j.id for j in app.admin.jobs.list(state=JobState.DEAD, limit=100_000)}

    def settle(self) -> None:
        """Wait until every due job has run (the jobs they enqueue and their retries too); raise
        ``JobFailed`` for a job that died since the last settle (with ``raise_errors``)."""
        wait_until(lambda: idle(self.app), timeout=self.timeout, interval=0.005, message="inline jobs to finish")
        died = [j for j in self.app.admin.jobs.list(state=JobState.DEAD, limit=100_000) if j.id not in self.dead_seen]
        self.dead_seen.update(j.id for j in died)
        if died and self.raise_errors:
            raise JobFailed(min(died, key=lambda j: j.id))


@contextmanager
def inline(app: Conveyor, *, raise_errors: bool = True, timeout: float = 30.0, **worker_options: Any) -> Iterator[Inline]:
    """Run each job as it is enqueued: ``enqueue`` returns once the job (and what it enqueued) ran.

    A job enqueued inside ``app.transaction()`` runs when the block commits; one joined to your
    own connection (or an async transaction) when you call ``settle()`` after committing. Retries
    happen at once (backoff 0 unless the enqueue sets one) so a test sees the final state.
    """
    state = Inline(app, raise_errors, timeout)
    originals = {name: getattr(app, name) for name in ("new_job", "enqueue", "enqueue_many", "aenqueue", "aenqueue_many", "transaction")}

    def new_job(job_type: str, payload: Any, options: dict[str, Any]) -> Any:
        return originals["new_job"](job_type, payload, {"backoff": 0, **options})

    def enqueue(*args: Any, connection: Any = None, **options: Any) -> Any:
        found = originals["enqueue"](*args, connection=connection, **{"backoff": 0, **options})
        if connection is None:
            state.settle()
        return found

    def enqueue_many(jobs: Iterable[Any], *, connection: Any = None, **options: Any) -> Any:
        found = originals["enqueue_many"](jobs, connection=connection, **{"backoff": 0, **options})
        if connection is None:
            state.settle()
        return found

    async def aenqueue(*args: Any, connection: Any = None, **options: Any) -> Any:
        found = await originals["aenqueue"](*args, connection=connection, **{"backoff": 0, **options})
        if connection is None:
            await asyncio.to_thread(state.settle)
        return found

    async def aenqueue_many(jobs: Iterable[Any], *, connection: Any = None, **options: Any) -> Any:
        found = await originals["aenqueue_many"](jobs, connection=connection, **{"backoff": 0, **options})
        if connection is None:
            await asyncio.to_thread(state.settle)
        return found

    @contextmanager
    def transaction() -> Iterator[Any]:
        with originals["transaction"]() as tx:
            yield tx
        state.settle()

    worker_options.setdefault("poll_interval", 0.01)
    worker_options.setdefault("finish_delay", 0.001)
    with running_worker(app, **worker_options):
        for name, replacement in (("new_job", new_job), ("enqueue", enqueue), ("enqueue_many", enqueue_many),
                                  ("aenqueue", aenqueue), ("aenqueue_many", aenqueue_many), ("transaction", transaction)):
            setattr(app, name, replacement)
        try:
            yield state
        finally:
            for name in originals:
                delattr(app, name)


def enqueued(app: Conveyor, job_type: str | None = None, payload: Any = None, *, state: Any = None, queue: str | None = None) -> list[Job]:
    """The jobs of ``job_type`` (any, if None) whose payload contains ``payload``, oldest first."""
    jobs = app.admin.jobs.list(type=job_type, state=state, queue=queue, limit=100_000)
    wanted = as_data(payload)
    return sorted((j for j in jobs if wanted is None or contains(j.payload, wanted)), key=lambda j: j.id)


def assert_enqueued(
    app: Conveyor, job_type: str, payload: Any = None, *, count: int | None = None, state: Any = None, queue: str | None = None
) -> list[Job]:
    """Fail unless such jobs exist (exactly ``count`` of them, if given); return them, oldest first.

    ``payload`` matches when the job's payload contains it (a dict, or a pydantic model).
    """
    found = enqueued(app, job_type, payload, state=state, queue=queue)
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    others = app.admin.jobs.list(type=job_type, limit=20)
    listing = "\n".join(f"  {j.id} {j.state.value} queue={j.queue} payload={j.payload}" for j in others) or "  (none)"
    expected = "at least one" if count is None else str(count)
    raise AssertionError(
        f"expected {expected} {job_type!r} job(s) with payload containing {as_data(payload)!r}"
        f"{f', state {state}' if state else ''}{f', queue {queue}' if queue else ''}; found {len(found)}. "
        f"Jobs of that type:\n{listing}"
    )


def assert_not_enqueued(app: Conveyor, job_type: str, payload: Any = None, **where: Any) -> None:
    found = enqueued(app, job_type, payload, **where)
    if found:
        raise AssertionError(f"expected no {job_type!r} job with payload containing {as_data(payload)!r}; found ids {[j.id for j in found]}")


def as_data(payload: Any) -> Any:
    return payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload


def contains(actual: Any, wanted: Any) -> bool:
    """``wanted``'s keys all present in ``actual`` with containing values (dicts), or equal values."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in wanted.items())
    return bool(actual == wanted)
