"""Insights: the read-mostly monitoring seam (stats, audit log, retention), kept apart from the hot path.

The queue's ``Backend`` is what workers need to move jobs; everything a person looking at the
queue needs lives here instead, so the claim path never grows for the dashboard's sake. Each
implementation takes the backend instance and borrows its connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.job import FINISHED_STATES, JobState

if TYPE_CHECKING:
    from conveyor.backends.base import Backend


@dataclass(frozen=True, slots=True)
class StateCount:
    """How many jobs of one type in one queue are in one state."""

    queue: str
    type: str
    state: JobState
    count: int


@dataclass(frozen=True, slots=True)
class FinishedBucket:
    """Jobs of one queue and type that finished in one time bucket (0 = oldest bucket)."""

    bucket: int
    queue: str
    type: str
    state: JobState
    count: int


@dataclass(frozen=True, slots=True)
class PendingAge:
    """Due jobs not yet started, and since when the oldest of them has been due."""

    queue: str
    type: str
    count: int
    oldest_due: datetime


@dataclass(frozen=True, slots=True)
class Duration:
    """One recent completed run: seconds it ran, and seconds it waited after it was due."""

    queue: str
    type: str
    run: float
    wait: float


@dataclass(frozen=True, slots=True)
class SnapshotParams:
    """``window`` seconds of recent finishes, cut into buckets of ``bucket`` seconds."""

    window: float = 900.0
    bucket: float = 10.0
    duration_samples: int = 5000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the stats are shaped from, read in one transaction at the database's ``now``."""

    now: datetime
    params: SnapshotParams
    states: tuple[StateCount, ...]
    finished: tuple[FinishedBucket, ...]
    pending: tuple[PendingAge, ...]
    durations: tuple[Duration, ...]
    finished_counts_age: float = 0.0  # seconds since completed/cancelled were counted (see SlowCounts)
    paused: tuple[tuple[str, datetime], ...] = ()  # queues an operator paused, and since when


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    actor: str
    action: str
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One mutating admin action: who (the token's name), what, on which jobs, when."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PruneParams:
    """What retention removes: finished jobs past their age, completed jobs past the last N per type.

    Dead jobs are never pruned: they stay in the dead-letter queue until purged.
    """

    completed_older_than: float | None = None  # seconds since finished
    cancelled_older_than: float | None = None
    keep_completed_per_type: int | None = None
    limit: int = 1000  # rows per batch (one short transaction)


class RetentionQueries(Protocol):
    """The lookups retention needs, in one backend's SQL, inside one open transaction ("now" fixed)."""

    def finished_before(self, state: JobState, age: float, limit: int) -> list[int]:
        """Ids of jobs in ``state`` that finished over ``age`` seconds ago, oldest first."""
        ...

    def count_finished_before(self, state: JobState, age: float) -> int: ...

    def completed_types(self) -> Iterator[str]:
        """Each job type that has completed jobs."""
        ...

    def beyond_newest(self, job_type: str, keep: int, limit: int) -> list[int]:
        """Ids of completed jobs of ``job_type`` older than its newest ``keep``."""
        ...

    def count_beyond_newest(self, job_type: str, keep: int) -> int: ...


def retention_plan(queries: RetentionQueries, params: PruneParams) -> list[int]:
    """The next batch ``prune`` deletes, for every backend: completed and cancelled jobs past their
    age first, then completed jobs beyond the newest N of their type; at most ``params.limit``."""
    ids: list[int] = []
    for state, age in ((JobState.COMPLETED, params.completed_older_than), (JobState.CANCELLED, params.cancelled_older_than),
                       (JobState.EXPIRED, params.cancelled_older_than)):
        if age is not None and len(ids) < params.limit:
            ids += queries.finished_before(state, age, params.limit - len(ids))
    if params.keep_completed_per_type is not None:
        for job_type in queries.completed_types():
            if len(ids) >= params.limit:
                break
            ids += queries.beyond_newest(job_type, params.keep_completed_per_type, params.limit - len(ids))
    return list(dict.fromkeys(ids))[: params.limit]


def retention_count(queries: RetentionQueries, params: PruneParams) -> int:
    """How many jobs the policy would remove now (a job past both rules may be counted twice)."""
    total = 0
    for state, age in ((JobState.COMPLETED, params.completed_older_than), (JobState.CANCELLED, params.cancelled_older_than),
                       (JobState.EXPIRED, params.cancelled_older_than)):
        if age is not None:
            total += queries.count_finished_before(state, age)
    if params.keep_completed_per_type is not None:
        for job_type in list(queries.completed_types()):
            total += queries.count_beyond_newest(job_type, params.keep_completed_per_type)
    return total


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """A workflow seen through its jobs: how many in each state, and when it started."""

    workflow_id: str
    total: int
    states: dict[str, int]
    created_at: datetime
    finished_at: datetime | None


class SlowCounts:
    """Completed and cancelled totals: exact while counting them is cheap, cached once it is not.

    Every other number in a snapshot comes from small index ranges, but these two walk every
    finished row the retention policy keeps (106 ms for a million on SQLite). Once a recount
    takes longer than ``slow`` seconds its result is reused for up to ``ttl`` seconds: totals
    that only move by completions and pruning may lag; nothing operational depends on them.
    """

    def __init__(self, slow: float = 0.025, ttl: float = 30.0) -> None:
        self.slow = slow
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[StateCount, ...]] | None = None

    def get(self, count: Callable[[], Iterable[StateCount]]) -> tuple[tuple[StateCount, ...], float]:
        """The counts and their age in seconds."""
        with self._lock:
            cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1], time.monotonic() - cached[0]
        started = time.monotonic()
        counts = tuple(count())
        took = time.monotonic() - started
        with self._lock:
            self._cached = (started, counts) if took > self.slow else None
        return counts, 0.0


class Insights(Protocol):
    """Monitoring queries and the few admin writes that are not part of a job's life."""

    def stats_snapshot(self, params: SnapshotParams) -> Snapshot: ...
    def audit_record(self, entry: NewAuditEntry) -> int: ...
    def audit_list(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]: ...
    def jobs_prune(self, params: PruneParams) -> int: ...
    def jobs_prunable(self, params: PruneParams) -> int: ...
    def tables_vacuum(self, min_dead: int) -> list[str]: ...
    def workers_forget(self, older_than: float) -> int: ...
    def workflows_recent(self, limit: int = 50) -> list[WorkflowSummary]: ...
    def sessions_open(self, session_id: str, actor: str, seconds: float) -> None: ...
    def sessions_live(self, session_id: str) -> bool: ...
    def sessions_close(self, session_id: str) -> bool: ...


def insights_for(backend: Backend) -> Insights:
    """The Insights implementation matching a backend, sharing its connections."""
    flavour = getattr(backend, "flavour", "")
    if flavour == "sqlite":
        from conveyor.backends.sqlite.backend import SQLiteBackend
        from conveyor.backends.sqlite.insights import SQLiteInsights

        assert isinstance(backend, SQLiteBackend)
        return SQLiteInsights(backend)
    if flavour == "postgres":
        from conveyor.backends.postgres.backend import PostgresBackend
        from conveyor.backends.postgres.insights import PostgresInsights

        assert isinstance(backend, PostgresBackend)
        return PostgresInsights(backend)
    raise TypeError(f"no insights for backend {type(backend).__name__}")


def summarise_workflows(order: list[str], rows: list[tuple[Any, ...]]) -> list[WorkflowSummary]:
    """Fold (workflow, state, count, first created, last finished) rows into one summary each."""
    acc: dict[str, dict[str, Any]] = {w: {"states": {}, "created": None, "finished": None, "open": False} for w in order}
    for workflow_id, state, count, created, finished in rows:
        a = acc[workflow_id]
        a["states"][state] = int(count)
        a["created"] = created if a["created"] is None else min(a["created"], created)
        if state not in FINISHED_STATES:
            a["open"] = True
        elif finished is not None:
            a["finished"] = finished if a["finished"] is None else max(a["finished"], finished)
    return [
        WorkflowSummary(w, sum(a["states"].values()), a["states"], a["created"], None if a["open"] else a["finished"])
        for w, a in acc.items()
        if a["created"] is not None
    ]
