"""Conveyor: the app object that knows the job types and the store; every interface goes through it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.backends import from_url
from conveyor.backends.base import Backend, JobFilter, NewJob, NewSchedule, Schedule, WorkerInfo
from conveyor.backends.insights import (
    AuditEntry,
    Insights,
    NewAuditEntry,
    PruneParams,
    SnapshotParams,
    WorkflowSummary,
    insights_for,
)
from conveyor.config import Settings
from conveyor.cron import Cron, CronSpec
from conveyor.cron import declare as declare_cron
from conveyor.errors import DeclarationError, InvalidTransition, JobNotFound, ScheduleNotFound, WorkflowError
from conveyor.events import EventName, Events, JobEvent
from conveyor.job import Job, JobState
from conveyor.options import Resolved, resolve
from conveyor.payload import encode
from conveyor.ratelimit import QueuePolicy
from conveyor.registry import JobSpec, Registry
from conveyor.stats import Health, Stats, Thresholds, shape
from conveyor.workflow import Flow, WorkflowStatus, collect, overall_state, topological

if TYPE_CHECKING:
    from conveyor.worker import Worker

F = TypeVar("F", bound=Callable[..., Any])
JobSpecTuple = tuple[str, Any] | tuple[str, Any, dict[str, Any]]


def row_of(job_type: str, text: str, opts: Resolved) -> NewJob:
    """The row to insert for a validated payload and its resolved options."""
    unique_key = opts.idempotency_key
    if unique_key is None and opts.unique_for is not None:
        unique_key = "u:" + hashlib.sha256(f"{job_type}\0{opts.queue}\0{text}".encode()).hexdigest()
    return NewJob(
        type=job_type,
        payload=text,
        queue=opts.queue,
        priority=opts.priority,
        max_attempts=opts.max_attempts,
        delay=opts.delay,
        run_at=opts.run_at,
        timeout=opts.timeout,
        backoff=opts.backoff,
        unique_key=unique_key,
        unique_for=opts.unique_for,
        workflow_id=opts.workflow_id,
        parent_id=opts.parent_id,
        depends_on=opts.depends_on,
    )


class Conveyor:
    """One app: declared jobs plus the database they are queued in.

    >>> app = Conveyor("sqlite:///shop.db")
    >>> @app.job(queue="email", max_attempts=5, timeout=30)
    ... async def send_confirmation(p: Confirmation, ctx) -> None: ...
    >>> app.enqueue("send_confirmation", {"order_id": "o1"}, priority=Priority.HIGH)
    """

    def __init__(self, database_url: str | None = None, **settings: Any) -> None:
        self.settings = Settings.load(database_url=database_url, **settings)
        self.registry = Registry()
        self.events = Events()
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        """The store, opened on first use (no I/O at import or construction)."""
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    self._backend = from_url(self.settings.database_url, self.settings.db_timeout)
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- declaring ----------------------------------------------------------------------

    def job(self, name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Declare a job type; options are defaults that each enqueue may override."""

        def decorate(func: F) -> F:
            self.registry.declare(func, name, options)
            return func

        return decorate

    def on(self, event: EventName) -> Callable[[Callable[[JobEvent], Any]], Callable[[JobEvent], Any]]:
        """Subscribe to ``completed``, ``failed`` (every failed attempt) or ``dead``."""

        def decorate(callback: Callable[[JobEvent], Any]) -> Callable[[JobEvent], Any]:
            return self.events.subscribe(event, callback)

        return decorate

    # -- enqueueing ---------------------------------------------------------------------

    def new_job(self, job_type: str, payload: Any, options: dict[str, Any]) -> NewJob:
        """Validate a job and its options into the row to insert (no I/O)."""
        spec = self.registry.get(job_type)
        text = encode(job_type, spec.model, payload)
        return row_of(job_type, text, resolve(spec.options, options))

    def enqueue(self, job_type: str, payload: Any = None, *, connection: Any = None, **options: Any) -> int:
        """Queue one job and return its id (the existing job's id if deduplicated).

        ``connection`` joins the caller's open transaction (from ``app.transaction()`` or the
        caller's own sqlite3/psycopg connection): the job commits or rolls back with it.
        """
        return self.backend.jobs_insert([self.new_job(job_type, payload, options)], connection)[0].id

    def enqueue_many(self, jobs: Iterable[JobSpecTuple], *, connection: Any = None, **options: Any) -> list[int]:
        """Queue many jobs in one transaction: ``[(type, payload)]`` or ``[(type, payload, options)]``."""
        rows = self._new_jobs(jobs, options)
        return [inserted.id for inserted in self.backend.jobs_insert(rows, connection)] if rows else []

    def _new_jobs(self, jobs: Iterable[JobSpecTuple], options: dict[str, Any]) -> list[NewJob]:
        """``new_job`` per item; items without options of their own share one resolve per type."""
        rows: list[NewJob] = []
        shared: dict[str, tuple[JobSpec, Resolved]] = {}
        for item in jobs:
            if len(item) > 2:
                rows.append(self.new_job(item[0], item[1], {**options, **item[2]}))
                continue
            job_type = item[0]
            known = shared.get(job_type)
            spec = known[0] if known else self.registry.get(job_type)
            text = encode(job_type, spec.model, item[1])  # same order as new_job: the type, the payload, then the options
            if known is None:
                known = shared[job_type] = (spec, resolve(spec.options, options))
            rows.append(row_of(job_type, text, known[1]))
        return rows

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A database transaction to share with ``enqueue(..., connection=tx)``.

        >>> with app.transaction() as tx:
        ...     tx.execute("INSERT INTO orders ...")
        ...     app.enqueue("send_confirmation", {...}, connection=tx)
        """
        with self.backend.transaction() as conn:
            yield conn

    async def aenqueue(self, job_type: str, payload: Any = None, **options: Any) -> int:
        """``enqueue`` for async code: validation here, the write on a worker thread."""
        row = self.new_job(job_type, payload, options)
        inserted = await asyncio.to_thread(self.backend.jobs_insert, [row])
        return inserted[0].id

    async def aenqueue_many(self, jobs: Iterable[JobSpecTuple], **options: Any) -> list[int]:
        rows = self._new_jobs(jobs, options)
        inserted = await asyncio.to_thread(self.backend.jobs_insert, rows)
        return [i.id for i in inserted]

    # -- workflows ----------------------------------------------------------------------

    def enqueue_workflow(self, flow: Flow, *, workflow_id: str | None = None, connection: Any = None) -> WorkflowHandle:
        """Store a whole graph of jobs in one transaction; cycles and unknown ids are refused.

        >>> handle = app.enqueue_workflow(chain(step("charge", p), group(step("email", p), step("invoice", p))))
        >>> app.workflow(handle.id).state
        'running'
        """
        wf_id = workflow_id or new_workflow_id()
        ordered = topological(collect(flow))
        rows = []
        for s, deps in ordered:
            row = self.new_job(s.job_type, s.payload, {**s.options, "workflow_id": wf_id})
            rows.append(replace(row, depends_on=tuple(deps)))
        inserted = self.backend.jobs_insert(rows, connection)
        return WorkflowHandle(wf_id, {id(s): i.id for (s, _), i in zip(ordered, inserted)}, [i.id for i in inserted])

    def workflow(self, workflow_id: str) -> WorkflowStatus:
        """The workflow's jobs, edges and overall state (running, completed, failed, cancelled)."""
        jobs = self.backend.workflow_jobs(workflow_id)
        if not jobs:
            raise WorkflowError(f"no workflow with id {workflow_id!r}")
        edges = self.backend.job_edges([j.id for j in jobs])
        return WorkflowStatus(workflow_id, overall_state(j.state.value for j in jobs), tuple(jobs), tuple(edges))

    def cancel_workflow(self, workflow_id: str) -> int:
        """Cancel every job of the workflow that has not started; running jobs finish."""
        return self.backend.jobs_cancel(JobFilter(workflow_id=workflow_id))

    def retry_workflow(self, workflow_id: str) -> int:
        """Retry a failed workflow from its dead jobs; what they cancelled waits for them again."""
        return self.backend.workflow_retry(workflow_id)

    # -- reading ------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        job = self.backend.job_get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def aget_job(self, job_id: int) -> Job:
        return await asyncio.to_thread(self.get_job, job_id)

    def list_jobs(self, *, limit: int = 100, before_id: int | None = None, **where: Any) -> list[Job]:
        """Newest first; filter by state, queue, type, ids, workflow_id, created_after/before."""
        return self.backend.jobs_list(job_filter(**where), limit=limit, before_id=before_id)

    def count_jobs(self, **where: Any) -> int:
        return self.backend.jobs_count(job_filter(**where))

    def dead_letters(self, *, limit: int = 100, before_id: int | None = None, **where: Any) -> list[Job]:
        """The dead-letter queue: jobs that ran out of attempts or could not run, newest first."""
        return self.list_jobs(limit=limit, before_id=before_id, state=JobState.DEAD, **where)

    def workers(self) -> list[WorkerInfo]:
        return self.backend.workers_list()

    def now(self) -> datetime:
        """The database's clock."""
        return self.backend.now()

    # -- steering -----------------------------------------------------------------------

    def retry(self, job_id: int) -> None:
        """Send a dead or cancelled job back to pending with fresh attempts."""
        if not self.backend.jobs_retry(JobFilter(ids=(job_id,))):
            raise InvalidTransition(job_id, self.get_job(job_id).state, "retry")

    def retry_jobs(self, **where: Any) -> int:
        """Retry every dead (and cancelled) job matching the filter; default: the whole DLQ."""
        where.setdefault("state", JobState.DEAD)
        return self.backend.jobs_retry(job_filter(**where))

    def cancel(self, job_id: int) -> None:
        """Cancel a job that has not started (waiting, scheduled or pending)."""
        if not self.backend.jobs_cancel(JobFilter(ids=(job_id,))):
            raise InvalidTransition(job_id, self.get_job(job_id).state, "cancel")

    def cancel_jobs(self, **where: Any) -> int:
        return self.backend.jobs_cancel(job_filter(**where))

    def purge(self, **where: Any) -> int:
        """Delete finished jobs matching the filter; default: the whole dead-letter queue."""
        where.setdefault("state", JobState.DEAD)
        return self.backend.jobs_purge(job_filter(**where))

    # -- monitoring and retention --------------------------------------------------------

    @property
    def insights(self) -> Insights:
        """The store's monitoring side (stats, audit log, retention), sharing its connections."""
        backend = self.backend
        cached = self.__dict__.get("_insights")
        if cached is None or cached[0] is not backend:
            cached = self.__dict__["_insights"] = (backend, insights_for(backend))
        return cached[1]

    def stats(self, window: float = 900.0, bucket: float = 10.0) -> Stats:
        """Counts, throughput, failure rate, run and wait times per queue and type, and health.

        >>> app.stats().queues[0].counts["pending"]
        """
        snapshot = self.insights.stats_snapshot(SnapshotParams(window=window, bucket=bucket))
        return shape(snapshot, self.workers(), self.thresholds(), self.registry.queues())

    async def astats(self) -> Stats:
        return await asyncio.to_thread(self.stats)

    def health(self) -> Health:
        """``ok``, or ``degraded`` with the checks that failed (DLQ growth, old due jobs, no live worker)."""
        return self.stats().health

    def thresholds(self) -> Thresholds:
        s = self.settings
        return Thresholds(s.health_pending_age, s.health_dead_growth, s.worker_stale_after)

    def audit(self, actor: str, action: str, target: str = "", **detail: Any) -> int:
        """Record a mutating admin action (who, what, on what) in the audit log."""
        return self.insights.audit_record(NewAuditEntry(actor, action, target, detail))

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        return self.insights.audit_list(limit, before_id)

    def prune_policy(self, **overrides: Any) -> PruneParams:
        """The retention policy from settings; ``overrides`` use PruneParams' field names."""
        s = self.settings
        policy = PruneParams(s.retain_completed, s.retain_cancelled, s.retain_completed_per_type, s.prune_batch)
        return replace(policy, **{k: v for k, v in overrides.items() if v is not None})

    def prune(self, policy: PruneParams | None = None, on_batch: Callable[[int], Any] | None = None) -> int:
        """Delete finished jobs the policy no longer keeps, in short batches; dead jobs stay.

        >>> app.prune(app.prune_policy(keep_completed_per_type=1000))
        """
        policy = policy or self.prune_policy()
        total = 0
        while True:
            removed = self.insights.jobs_prune(policy)
            total += removed
            if on_batch is not None and removed:
                on_batch(removed)
            if removed < policy.limit:
                return total

    def prunable(self, policy: PruneParams | None = None) -> int:
        """How many jobs ``prune`` would delete now (for progress bars and dry runs)."""
        return self.insights.jobs_prunable(policy or self.prune_policy())

    def forget_workers(self, older_than: float | None = None) -> int:
        """Drop worker rows whose heartbeat is older than ``older_than`` seconds (default: an hour)."""
        return self.insights.workers_forget(older_than if older_than is not None else max(3600.0, self.settings.worker_stale_after))

    def recent_workflows(self, limit: int = 50) -> list[WorkflowSummary]:
        """The newest workflows with their jobs counted by state."""
        return self.insights.workflows_recent(limit)

    # -- schedules and limits --------------------------------------------------------------

    def cron(
        self, expression: str, job_type: str, payload: Any = None, *, name: str | None = None, tz: str | None = None,
        missed: str = "skip", **options: Any,
    ) -> CronSpec:
        """Enqueue ``job_type`` on a cron schedule: each fire once, however many workers run.

        Five fields, or six with seconds first; ``tz`` is an IANA zone (default UTC).
        ``missed``: fires that passed while no worker ran are skipped, or run once ("run_once").

        >>> app.cron("0 0 * * *", "daily_sales_report", tz="Europe/Berlin")
        >>> app.cron("*/10 * * * * *", "poll_inbox", {"box": "orders"}, name="inbox", queue="io")
        """
        spec = declare_cron(expression, job_type, payload, name, tz, missed, options)
        if spec.name in self.registry.schedules:
            raise DeclarationError(f"schedule {spec.name!r} is declared twice; give each a distinct name=")
        self.registry.schedules[spec.name] = spec
        return spec

    def cron_sync(self, replace: bool = True) -> None:
        """Write the declared schedules to their rows (workers do this when they start).

        With ``replace``, rows are updated to the declarations, and a schedule of one of this
        app's job types that it no longer declares is disabled (schedules of job types the app
        does not know belong to another app sharing the database and are left alone); without
        it, only declared schedules that have no row yet are added.
        """
        now = self.now()
        rows = []
        for spec in self.registry.schedules.values():
            job = self.new_job(spec.job_type, spec.payload, spec.options)  # the type, payload and options must be valid
            rows.append(
                NewSchedule(spec.name, spec.cron.expression, spec.cron.tz, spec.job_type, job.payload,
                            json.dumps(spec.options), spec.missed.value, spec.cron.next_after(now))
            )
        self.backend.schedules_sync(rows, [spec.name for spec in self.registry] if replace else None)

    def cron_list(self) -> list[Schedule]:
        """Every schedule with its next fire time, soonest first (disabled ones: no longer declared)."""
        rows = self.backend.schedules_list()
        if set(self.registry.schedules) - {s.name for s in rows}:  # declared here, not written yet
            self.cron_sync(replace=False)
            rows = self.backend.schedules_list()
        return rows

    def cron_pause(self, name: str) -> None:
        """Stop firing ``name`` until resumed (fires while paused are skipped)."""
        self.schedule(name)
        self.backend.schedule_set(name, paused=True)

    def cron_resume(self, name: str) -> None:
        """Fire ``name`` again from its next fire time after now."""
        found = self.schedule(name)
        if found.paused:
            self.backend.schedule_set(name, paused=False, next_fire_at=Cron(found.expression, found.tz).next_after(self.now()))

    def cron_trigger(self, name: str) -> int:
        """Enqueue the schedule's job now, outside its timetable; returns the job id."""
        found = self.schedule(name)
        return self.enqueue(found.job_type, found.payload, **found.options)

    def schedule(self, name: str) -> Schedule:
        for found in self.cron_list():
            if found.name == name:
                return found
        raise ScheduleNotFound(name)

    def queue_limit(self, queue: str, *, concurrency: int | None = None, aging: float | None = None) -> QueuePolicy:
        """Flow control for a whole queue, held across all workers.

        ``concurrency``: at most this many of the queue's jobs running at once in the system.
        ``aging``: seconds after which a due job is served ahead of higher priorities
        (strict priority otherwise), so a flood of urgent jobs cannot starve the rest.

        >>> app.queue_limit("invoices", concurrency=2)
        >>> app.queue_limit("default", aging=60)
        """
        policy = QueuePolicy(queue, concurrency, aging)
        self.registry.queue_policies[queue] = policy
        return policy

    # -- running ------------------------------------------------------------------------

    def run_worker(self, **options: Any) -> Worker:
        """Run a worker in this process until SIGTERM/SIGINT (see ``conveyor worker``); the stopped
        worker is returned (``worker.replace``: it asks for a fresh process in its place)."""
        from conveyor.worker import Worker

        worker = Worker(self, **options)
        worker.run()
        return worker


def job_filter(
    state: JobState | str | Sequence[JobState | str] | None = None,
    queue: str | Sequence[str] | None = None,
    type: str | Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    workflow_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> JobFilter:
    """Keyword filters as a JobFilter; unknown states are refused by JobState."""
    return JobFilter(
        states=tuple(JobState(s) for s in as_tuple(state)),
        queues=as_tuple(queue),
        types=as_tuple(type),
        ids=tuple(int(i) for i in ids or ()),
        workflow_id=workflow_id,
        created_after=created_after,
        created_before=created_before,
    )


def as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def new_workflow_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """What ``enqueue_workflow`` stored: the workflow id and each step's job id."""

    id: str
    by_step: dict[int, int]
    job_ids: list[int]

    def job_id(self, step: object) -> int:
        return self.by_step[id(step)]


