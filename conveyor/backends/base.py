"""The storage contract every backend implements; the only seam with SQL behind it.

Backends are synchronous (stdlib sqlite3, psycopg's sync API): the asyncio worker reaches
them through one bridge thread (see ``conveyor/bridge.py``), and web apps call them
directly or through the app's ``a*`` methods. Each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from conveyor.job import Job, JobState


@dataclass(frozen=True, slots=True)
class NewJob:
    """One row to insert. ``delay`` counts from the database's now; ``run_at`` (epoch) wins."""

    type: str
    payload: str  # JSON text, already validated
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    delay: float = 0.0
    run_at: float | None = None
    timeout: float | None = None
    backoff: str | None = None
    unique_key: str | None = None
    unique_for: float | None = None  # None with a key: unique while the row exists
    workflow_id: str | None = None
    parent_id: int | None = None


@dataclass(frozen=True, slots=True)
class Inserted:
    """The id given to a NewJob, and whether it was an existing job (deduplicated)."""

    id: int
    existing: bool = False


@dataclass(frozen=True, slots=True)
class Lease:
    """A claimed run: the job id and the fencing token every write of that run carries."""

    job_id: int
    token: int


@dataclass(frozen=True, slots=True)
class ClaimParams:
    worker_id: str
    queues: tuple[str, ...]
    limit: int
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run ended, written back fenced by its lease.

    ``state`` is the next state: completed, scheduled/pending (retry or snooze), dead or
    cancelled. ``refund`` gives the attempt back (snooze, release). ``children`` are jobs the
    handler enqueued, inserted only if this write wins its lease.
    """

    lease: Lease
    state: JobState
    delay: float = 0.0
    error: str | None = None
    traceback: str | None = None
    worker_id: str | None = None
    result: str | None = None  # JSON text
    refund: bool = False
    children: tuple[NewJob, ...] = ()


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a list, retry, cancel or purge applies to; every field narrows."""

    states: tuple[JobState, ...] = ()
    queues: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    workflow_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    running: int = 0
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A job store. Every method is atomic; every write of a run is fenced by its Lease."""

    url: str

    # set-up
    def migrate(self) -> list[int]: ...
    def close(self) -> None: ...
    def now(self) -> datetime: ...
    def transaction(self) -> AbstractContextManager[Any]: ...

    # enqueue
    def jobs_insert(self, jobs: Sequence[NewJob], connection: Any = None) -> list[Inserted]: ...

    # the life of a run
    def jobs_claim(self, params: ClaimParams) -> list[Job]: ...
    def jobs_finish(self, outcomes: Sequence[Outcome]) -> list[int]: ...
    def leases_renew(self, leases: Sequence[Lease], seconds: float) -> list[int]: ...
    def jobs_release(self, leases: Sequence[Lease]) -> int: ...
    def jobs_rescue(self, limit: int = 1000) -> list[int]: ...
    def job_progress(self, lease: Lease, progress: str) -> bool: ...

    # per-step marks (ctx.once)
    def mark_get(self, job_id: int, key: str) -> tuple[bool, str | None]: ...
    def mark_put(self, lease: Lease, key: str, value: str | None) -> bool: ...

    # reading and steering
    def job_get(self, job_id: int) -> Job | None: ...
    def jobs_list(self, where: JobFilter, limit: int = 100, before_id: int | None = None) -> list[Job]: ...
    def jobs_count(self, where: JobFilter) -> int: ...
    def jobs_retry(self, where: JobFilter) -> int: ...
    def jobs_cancel(self, where: JobFilter) -> int: ...
    def jobs_purge(self, where: JobFilter) -> int: ...

    # workers
    def workers_heartbeat(self, info: WorkerInfo) -> None: ...
    def workers_remove(self, worker_id: str) -> None: ...
    def workers_list(self) -> list[WorkerInfo]: ...

    # waking idle workers: ``callback`` is called, from any thread, when jobs may be due
    def listen(self, callback: Callable[[], None]) -> Callable[[], None]: ...


JOB_COLUMNS = (
    "id, type, queue, state, payload, priority, attempt, max_attempts, run_at, created_at, "
    "attempted_at, finished_at, lease_token, lease_expires_at, worker_id, timeout, unique_key, "
    "workflow_id, parent_id, progress, result, errors, backoff"
)
"""The columns every job read selects, in the order the backends' row readers expect."""
