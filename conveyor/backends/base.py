"""The storage contract every backend implements; the only seam with SQL behind it.

Backends are synchronous (stdlib sqlite3, psycopg's sync API): the asyncio worker reaches
them through one bridge thread (see ``conveyor/bridge.py``), and web apps call them
directly or through the app's ``a*`` methods. Each method is one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from conveyor.deprecation import renamed
from conveyor.errors import WorkflowError
from conveyor.job import FINISHED_STATES, FailedAttempt, Job, JobState, job_from_fields

FINISHED_SQL = "(" + ",".join(f"'{state.value}'" for state in sorted(FINISHED_STATES)) + ")"
"""``FINISHED_STATES`` (conveyor/job.py, the one definition) as an SQL list: ``state IN {FINISHED_SQL}``."""


@dataclass(frozen=True, slots=True)
class Dependency:
    """An edge to wait on: an existing ``job_id``, or row ``local`` of the same insert batch."""

    job_id: int | None = None
    local: int | None = None
    continue_on_failure: bool = False


@dataclass(slots=True, unsafe_hash=True)
class NewJob:
    """One row to insert. ``delay`` counts from the database's now; ``run_at`` (epoch) wins.

    Treat it as immutable (derive a changed copy with ``dataclasses.replace``); it is not
    ``frozen`` only because a frozen ``__init__`` sets each field through
    ``object.__setattr__``, which cost ~2 µs of every bulk-enqueued job.
    """

    type: str
    payload: str  # JSON text, already validated
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 20
    delay: float = 0.0
    run_at: float | None = None
    timeout: float | None = None
    backoff: str | None = None
    unique_key: str | None = None
    unique_for: float | None = None  # with a key: it blocks at most this long
    unique_states: tuple[str, ...] | None = None  # with a key: the holder's states that block (None: unfinished)
    replace: bool = False  # with a key: update a scheduled/pending holder's payload and run time (debounce)
    expires_at: float | None = None  # epoch seconds; wins over expires_in
    expires_in: float | None = None  # seconds after the database's now
    workflow_id: str | None = None
    parent_id: int | None = None
    depends_on: tuple[Dependency, ...] = ()
    meta: str | None = None  # JSON object text (conveyor/middleware.py), carried to every run


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
    """``limits``, ``types`` and ``aging`` (flow control) are empty on the common path, which
    then stays one statement; any of them takes the flow-controlled claim instead."""

    worker_id: str
    queues: tuple[str, ...]
    limit: int
    lease_seconds: float
    limits: tuple[ClaimLimit, ...] = ()  # rate and concurrency limits, counted in the claim's transaction
    types: tuple[str, ...] = ()  # claim only these job types (a batch handler topping up its batch)
    aging: tuple[tuple[str, float], ...] = ()  # (queue, seconds): jobs due longer than that come first


class LimitKind(StrEnum):
    RATE = "rate"  # at most ``count`` starts in any ``per`` seconds
    RUNNING = "running"  # at most ``count`` running at once


@dataclass(frozen=True, slots=True)
class ClaimLimit:
    """A limit every claim enforces across all workers, over the jobs of ``types`` or of ``queue``.

    ``key`` names its budget: rate limits log their starts under it; on PostgreSQL claims
    touching the same key are serialised by an advisory lock on it.
    """

    key: str
    kind: LimitKind
    count: int
    per: float = 0.0
    types: tuple[str, ...] = ()
    queue: str | None = None

    def covers(self, job_type: str, queue: str) -> bool:
        return job_type in self.types if self.queue is None else queue == self.queue


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A declared schedule as written by a sync; ``next_fire_at`` is used when the row is new
    or its expression or timezone changed (otherwise the stored one stands)."""

    name: str
    expression: str
    tz: str
    job_type: str
    payload: str  # JSON text
    options: str  # JSON text: enqueue options for the jobs it fires
    missed: str
    next_fire_at: datetime


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule row: ``enabled`` while declared in the app's code (or added at run time),
    ``paused`` by an operator."""

    name: str
    expression: str
    tz: str
    job_type: str
    payload: Any
    options: dict[str, Any]
    missed: str
    enabled: bool
    paused: bool
    next_fire_at: datetime
    last_fire_at: datetime | None = None
    last_job_id: int | None = None
    source: str = "code"  # "code": declared with app.cron; "runtime": added through app.admin.schedules

    @property
    def active(self) -> bool:
        return self.enabled and not self.paused


@dataclass(frozen=True, slots=True)
class FireParams:
    """Move schedule ``name`` from ``expected`` to ``next_fire_at`` and insert ``jobs``, only if no
    other worker moved it first (compare-and-set): each fire is enqueued once."""

    name: str
    expected: datetime
    next_fire_at: datetime
    jobs: tuple[NewJob, ...]
    fired_at: datetime | None = None  # the latest fire time enqueued


@dataclass(frozen=True, slots=True)
class FinishParams:
    """The write-back of one run's ``Outcome`` (conveyor/outcome.py), fenced by its lease.

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
    def jobs_claim_rows(self, params: ClaimParams) -> list[Any]: ...
    def read_claimed(self, rows: Sequence[Any]) -> list[Job]: ...
    def jobs_finish(self, outcomes: Sequence[FinishParams]) -> list[int]: ...
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
    def jobs_cancel(self, where: JobFilter, running: bool = False) -> int: ...
    def jobs_run_now(self, job_id: int) -> bool: ...

    # queues
    def queue_pause(self, queue: str, paused: bool) -> bool: ...
    def queues_paused(self) -> dict[str, datetime]: ...
    def jobs_purge(self, where: JobFilter) -> int: ...

    # workflows
    def workflow_jobs(self, workflow_id: str, limit: int = 100_000) -> list[Job]: ...
    def job_edges(self, job_ids: Sequence[int]) -> list[tuple[int, int, bool]]: ...
    def parent_results(self, job_id: int) -> list[tuple[int, str, str, Any]]: ...
    def workflow_retry(self, workflow_id: str) -> int: ...

    # schedules (cron) and flow control
    def schedules_sync(self, schedules: Sequence[NewSchedule], owned_types: Sequence[str] | None) -> None: ...
    def schedules_list(self) -> list[Schedule]: ...
    def schedules_due(self) -> tuple[datetime, list[Schedule]]: ...
    def schedule_fire(self, params: FireParams) -> list[int] | None: ...
    def schedule_set(self, name: str, paused: bool, next_fire_at: datetime | None = None) -> bool: ...
    def schedule_put(self, schedule: NewSchedule, create: bool) -> bool: ...
    def schedule_remove(self, name: str) -> bool: ...

    # workers
    def workers_heartbeat(self, info: WorkerInfo) -> None: ...
    def workers_remove(self, worker_id: str) -> None: ...
    def workers_list(self) -> list[WorkerInfo]: ...

    # waking idle workers: ``callback`` is called, from any thread, when jobs may be due
    def listen(self, callback: Callable[[], None]) -> Callable[[], None]: ...
    # result waiters: ``callback`` when jobs may have finished (returns once subscribed)
    def listen_finished(self, callback: Callable[[], None]) -> Callable[[], None]: ...
    # workers: the ids of running jobs just cancelled (other processes' cancels may arrive by renewal only)
    def listen_cancel(self, callback: Callable[[list[int]], None]) -> Callable[[], None]: ...


def dependency_ids(job: NewJob, earlier: Sequence[Inserted]) -> list[int]:
    """The job ids ``job`` waits for, with references to earlier rows of its batch resolved."""
    ids: list[int] = []
    for dep in job.depends_on:
        if dep.job_id is not None:
            ids.append(dep.job_id)
        elif dep.local is not None and 0 <= dep.local < len(earlier):
            ids.append(earlier[dep.local].id)
        else:
            raise WorkflowError(f"job {job.type!r} depends on row {dep.local} of its batch, which is not an earlier row")
    return ids


def initial_state(job: NewJob, parents: Sequence[int], states: dict[int, str]) -> str | None:
    """'waiting', 'cancelled' or None (normal) for a new job, from its parents' states."""
    missing = sorted(set(parents) - set(states))
    if missing:
        raise WorkflowError(f"job {job.type!r} depends on unknown job ids {missing[:10]}")
    waiting = False
    for dep, parent in zip(job.depends_on, parents):
        state = states[parent]
        if state in ("dead", "cancelled", "expired"):
            if not dep.continue_on_failure:
                return "cancelled"
        elif state != "completed":
            waiting = True
    return "waiting" if waiting else None


class JsonColumns(NamedTuple):
    """A job row's JSON columns, read defensively: a corrupted row is reported, never raised."""

    payload: dict[str, Any]
    progress: Any
    result: Any
    errors: tuple[FailedAttempt, ...]
    corrupt: str | None


def read_json_columns(payload: Any, progress: Any, result: Any, errors: Any, decoded: bool = False) -> JsonColumns:
    """Parse (SQLite: text) or accept (PostgreSQL: ``decoded`` by the driver) the JSON columns of a row.

    This runs for every claimed job, so the common row (a JSON object, no history yet) takes
    the short way.
    """
    if not decoded and progress is None and result is None and errors == "[]":
        # The claimed row: no history, no result yet, a payload that Conveyor wrote compactly.
        try:
            data, end = _scan(payload, 0)
        except (StopIteration, TypeError, ValueError, RecursionError):
            end = -1
        if end == len(payload) and type(data) is dict:
            return JsonColumns(data, None, None, (), None)
    problems: list[str] = []
    data = payload if decoded else _load("payload", payload, {}, problems)
    if not isinstance(data, dict):
        problems.append(f"payload is a JSON {type(data).__name__}, not an object")
        data = {}
    parsed: tuple[FailedAttempt, ...] = ()
    if errors and errors != "[]":
        history = errors if decoded else _load("errors", errors, [], problems)
        try:
            parsed = tuple(FailedAttempt.from_dict(e) for e in history)
        except (TypeError, ValueError, AttributeError, OverflowError, OSError):
            problems.append("errors is not a list of error records")
    return JsonColumns(
        data,
        progress if decoded or progress is None else _load("progress", progress, None, problems),
        result if decoded or result is None else _load("result", result, None, problems),
        parsed,
        "; ".join(problems) or None,
    )


_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The decoder's C scanner: one JSON value from an offset, without ``loads``'s whitespace passes."""


def _load(name: str, value: Any, default: Any, problems: list[str]) -> Any:
    if value is None:
        return default
    try:
        return json.loads(value)
    except ValueError as exc:
        problems.append(f"{name} is not valid JSON ({exc})")
    except RecursionError:
        problems.append(f"{name} is nested too deeply to be read")
    return default


def claimed(rows: Sequence[Any], read: Callable[[Any], Job]) -> list[Job]:
    """Claimed rows as Jobs in claim order (RETURNING gives no order): priority, then FIFO."""
    jobs = [read(r) for r in rows]
    jobs.sort(key=lambda j: (-j.priority, j.id))
    return jobs


def read_meta(value: Any) -> dict[str, Any] | None:
    """A job's meta column: jsonb (a dict already), JSON text (SQLite) or NULL. Meta is advisory
    context, so a value that is not a JSON object reads as None rather than failing the job."""
    if value is None or isinstance(value, dict):
        return value
    try:
        found = json.loads(value)
    except (TypeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def corrupt_reason(columns: str | None, state: str | None) -> str | None:
    """A row's problems (its JSON columns', its state's) as one ``Job.corrupt`` text; None for a sound row."""
    if columns is None or state is None:
        return columns or state
    return f"{columns}; {state}"


_STATES = {state.value: state for state in JobState}


def read_state(value: str) -> tuple[JobState, str | None]:
    """A stored state; an unknown one (the CHECK constraint bypassed) reads as dead, with why."""
    state = _STATES.get(value)
    return (state, None) if state is not None else (JobState.DEAD, f"unknown state {value!r}")


class Unreadable(NamedTuple):
    """A column value the driver could not turn into Python (a PostgreSQL row read leniently)."""

    reason: str


class Salvaged(tuple[Any, ...]):
    """A row read value by value after the driver failed on it: some values may be ``Unreadable``."""

    __slots__ = ()


TIME_COLUMNS = {8: "run_at", 9: "created_at", 10: "attempted_at", 11: "finished_at", 13: "lease_expires_at", 24: "expires_at"}
JSON_COLUMNS = {4: "payload", 19: "progress", 20: "result", 21: "errors"}
TIME_UNREADABLE = datetime.min.replace(tzinfo=UTC)
"""What an unreadable time reads as (the row says why in ``corrupt``)."""


def salvaged_job(r: Sequence[Any], decoded: bool, at: Callable[[float], datetime] | None = None) -> Job:
    """A job row that the fast reader could not read (a time out of range, JSON nested too deep,
    a value the driver failed on) as a Job whose ``corrupt`` says what is wrong, never an
    exception: the worker moves it to the dead letters and every surface can still show it.
    ``at`` converts stored times (SQLite's epoch seconds); None when the driver did (PostgreSQL)."""
    values = list(r)
    problems: list[str] = []
    for i, name in TIME_COLUMNS.items():
        value = values[i]
        if isinstance(value, Unreadable):
            problems.append(value.reason)
            values[i] = TIME_UNREADABLE if i in (8, 9) else None
        elif at is not None and value is not None:
            try:
                values[i] = at(value)
            except (ValueError, OverflowError, OSError, TypeError) as exc:
                problems.append(f"{name} {value!r} is out of range ({exc})")
                values[i] = TIME_UNREADABLE if i in (8, 9) else None
    for i in JSON_COLUMNS:
        value = values[i]
        if isinstance(value, Unreadable):
            problems.append(value.reason)
            values[i] = {} if i == 4 else ([] if i == 21 and decoded else ("[]" if i == 21 else None))
    for i, value in enumerate(values):
        if isinstance(value, Unreadable):
            problems.append(value.reason)
            values[i] = None
    cols = read_json_columns(values[4], values[19], values[20], values[21], decoded=decoded)
    state, odd_state = read_state(values[3])
    corrupt = "; ".join(p for p in (*problems, cols.corrupt, odd_state) if p)
    return job_from_fields((
        *values[:3], state, cols.payload, *values[5:19], cols.progress, cols.result, cols.errors, values[22], values[24], corrupt or None, None,
    ))  # fmt: skip


JOB_COLUMNS = (
    "id, type, queue, state, payload, priority, attempt, max_attempts, run_at, created_at, "
    "attempted_at, finished_at, lease_token, lease_expires_at, worker_id, timeout, unique_key, "
    "workflow_id, parent_id, progress, result, errors, backoff, meta, expires_at"
)
"""The columns every job read selects, in the order the backends' row readers expect."""



def adoption(finish: FinishParams) -> tuple[str | None, tuple[NewJob, ...]]:
    """What adopting a completed run's children means, for every backend: the workflow id to give
    the parent if it has none (a parent outside any workflow starts one named after itself, so its
    children and theirs are one workflow), and the children to insert with their workflow set."""
    children = finish.children
    if all(c.workflow_id is not None for c in children):
        return None, children
    root = str(finish.lease.job_id)
    return root, tuple(replace(c, workflow_id=root) if c.workflow_id is None else c for c in children)

if TYPE_CHECKING:
    Outcome = FinishParams  # deprecated name: ``Outcome`` is the run's result (conveyor/outcome.py); one release
else:
    __getattr__ = renamed(__name__, {"Outcome": ("conveyor.backends.base.FinishParams", lambda: FinishParams)})
