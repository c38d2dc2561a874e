"""Conveyor: the app object that knows the job types and the store; every interface goes through it."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

from typing_extensions import Unpack

from conveyor.admin import Admin, Selection
from conveyor.backends import from_url
from conveyor.backends.base import Backend, NewJob, NewSchedule, Schedule, WorkerInfo
from conveyor.backends.insights import (
    AuditEntry,
    Insights,
    PruneParams,
    WorkflowSummary,
    insights_for,
)
from conveyor.backends.joined import sync_connection
from conveyor.config import Settings
from conveyor.cron import CronSpec
from conveyor.cron import declare as declare_cron
from conveyor.deprecation import deprecated
from conveyor.errors import DeclarationError
from conveyor.events import EventName, Events, JobEvent
from conveyor.handle import BatchDeclaration, Declaration
from conveyor.job import Job, JobState
from conveyor.middleware import Chain, Middleware
from conveyor.options import JobDeclaration, Resolved, resolve
from conveyor.payload import encode
from conveyor.ratelimit import QueuePolicy
from conveyor.registry import JobSpec, Registry
from conveyor.stats import Health, Stats, Thresholds
from conveyor.transaction import AsyncTransaction, TransactionThreads, ainsert
from conveyor.workflow import Flow, NamedJob, WorkflowStatus, collect, topological, type_name

if TYPE_CHECKING:
    from conveyor.worker import Worker

JobSpecTuple = tuple[str | NamedJob, Any] | tuple[str | NamedJob, Any, dict[str, Any]]


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
        unique_states=opts.unique_states,
        replace=opts.replace,
        expires_at=opts.expires_at,
        expires_in=opts.expires_in,
    )


class Conveyor:
    """One app: declared jobs plus the database they are queued in.

    >>> app = Conveyor("sqlite:///shop.db")
    >>> @app.job(queue="email", max_attempts=5, timeout=30)
    ... async def send_confirmation(p: Confirmation, ctx) -> None: ...
    >>> send_confirmation.enqueue(Confirmation(order_id="o1"), priority=Priority.HIGH)  # or by name: app.enqueue("send_confirmation", {...})
    """

    def __init__(self, database_url: str | None = None, **settings: Any) -> None:
        self.settings = Settings.load(database_url=database_url, **settings)
        self.registry = Registry()
        self.events = Events()
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self._tx_threads = TransactionThreads()
        self.middleware = Chain()

    @property
    def backend(self) -> Backend:
        """The store, opened on first use (no I/O at import or construction)."""
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    s = self.settings
                    self._backend = from_url(
                        s.database_url, s.db_timeout, pool_size=s.db_pool_size, pooler=s.db_pooler, listen_url=s.db_listen_url
                    )
        return self._backend

    def close(self) -> None:
        self._tx_threads.close()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- declaring ----------------------------------------------------------------------

    @overload
    def job(self, name: str | None = None, *, batch: int, **options: Unpack[JobDeclaration]) -> BatchDeclaration: ...

    @overload
    def job(self, name: str | None = None, **options: Unpack[JobDeclaration]) -> Declaration: ...

    def job(self, name: str | None = None, **options: Any) -> Declaration:
        """Declare a job type and get its typed handle; options are defaults each enqueue may override.

        >>> @app.job(queue="email", max_attempts=20)
        ... def send(p: Email, ctx: JobContext) -> None: ...
        >>> send.enqueue(Email(to="a@example.com"), delay=60)
        """
        return (BatchDeclaration if options.get("batch") is not None else Declaration)(self, name, options)

    def use(self, *middlewares: Middleware) -> None:
        """Add middleware: hooks around each enqueue and each run (conveyor/middleware.py, docs/middleware.md).

        >>> app.use(OpenTelemetry(), ErrorReporter())   # the first given is the outermost
        """
        self.middleware.add(*middlewares)

    def on(self, event: EventName) -> Callable[[Callable[[JobEvent], Any]], Callable[[JobEvent], Any]]:
        """Subscribe to ``completed``, ``failed`` (every failed attempt) or ``dead``."""

        def decorate(callback: Callable[[JobEvent], Any]) -> Callable[[JobEvent], Any]:
            return self.events.subscribe(event, callback)

        return decorate

    # -- enqueueing ---------------------------------------------------------------------

    def new_job(self, job_type: str | NamedJob, payload: Any, options: dict[str, Any]) -> NewJob:
        """Validate a job and its options into the row to insert (no I/O); middleware may add its meta."""
        row = self._row(job_type, payload, options)
        return self.middleware.prepared([row])[0] if self.middleware else row

    def _row(self, job_type: str | NamedJob, payload: Any, options: dict[str, Any]) -> NewJob:
        spec = self.registry.get(type_name(job_type))
        text = encode(spec.name, spec.model, payload)
        return row_of(spec.name, text, resolve(spec.options, options))

    def _insert(self, rows: list[NewJob], connection: Any) -> list[int]:
        """Write rows (joining ``connection``'s transaction if given), through the enqueue middleware."""
        conn = sync_connection(connection)
        if not self.middleware:
            return [inserted.id for inserted in self.backend.jobs_insert(rows, conn)]
        return self.middleware.enqueue(rows, lambda given: [inserted.id for inserted in self.backend.jobs_insert(list(given), conn)])

    def enqueue(self, job_type: str | NamedJob, payload: Any = None, *, connection: Any = None, **options: Any) -> int:
        """Queue one job by its type's name and return its id (the existing job's id if deduplicated).

        For producers that do not import the handlers' module; where the handle is at hand,
        ``handle.enqueue(payload, ...)`` is the same call, checked by mypy.

        ``connection`` joins the caller's open transaction (``app.transaction()``, the caller's own
        sqlite3/psycopg connection, a SQLAlchemy Session or Connection, Django's connection): the
        job commits or rolls back with it.
        """
        return self._insert([self.new_job(job_type, payload, options)], connection)[0]

    def enqueue_many(self, jobs: Iterable[JobSpecTuple], *, connection: Any = None, **options: Any) -> list[int]:
        """Queue many jobs in one transaction: ``[(type, payload)]`` or ``[(type, payload, options)]``."""
        rows = self._new_jobs(jobs, options)
        return self._insert(rows, connection) if rows else []

    def _new_jobs(self, jobs: Iterable[JobSpecTuple], options: dict[str, Any]) -> list[NewJob]:
        """``new_job`` per item; items without options of their own share one resolve per type."""
        rows: list[NewJob] = []
        shared: dict[str, tuple[JobSpec, Resolved]] = {}
        for item in jobs:
            if len(item) > 2:
                rows.append(self._row(item[0], item[1], {**options, **item[2]}))
                continue
            job_type = type_name(item[0])
            known = shared.get(job_type)
            spec = known[0] if known else self.registry.get(job_type)
            text = encode(job_type, spec.model, item[1])  # same order as new_job: the type, the payload, then the options
            if known is None:
                known = shared[job_type] = (spec, resolve(spec.options, options))
            rows.append(row_of(job_type, text, known[1]))
        return self.middleware.prepared(rows) if self.middleware else rows

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A database transaction to share with ``enqueue(..., connection=tx)``.

        >>> with app.transaction() as tx:
        ...     tx.execute("INSERT INTO orders ...")
        ...     app.enqueue("send_confirmation", {...}, connection=tx)
        """
        with self.backend.transaction() as conn:
            yield conn

    def atransaction(self) -> AsyncTransaction:
        """``transaction`` for async code: share it with ``aenqueue(..., connection=tx)``.

        >>> async with app.atransaction() as tx:
        ...     await tx.execute("INSERT INTO orders ...")
        ...     await app.aenqueue("send_confirmation", {...}, connection=tx)
        """
        return AsyncTransaction(self.backend, self._tx_threads)

    async def aenqueue(self, job_type: str | NamedJob, payload: Any = None, *, connection: Any = None, **options: Any) -> int:
        """``enqueue`` for async code: validation here, the write on a worker thread.

        ``connection`` joins the caller's async transaction: ``app.atransaction()``, a
        ``psycopg.AsyncConnection``, an ``aiosqlite`` connection, or a SQLAlchemy ``AsyncSession``.
        """
        return (await self._ainsert([self.new_job(job_type, payload, options)], connection))[0]

    async def aenqueue_many(self, jobs: Iterable[JobSpecTuple], *, connection: Any = None, **options: Any) -> list[int]:
        rows = self._new_jobs(jobs, options)
        return await self._ainsert(rows, connection) if rows else []

    async def _ainsert(self, rows: list[NewJob], connection: Any) -> list[int]:
        async def insert(given: Sequence[NewJob]) -> list[int]:
            return [i.id for i in await ainsert(self.backend, list(given), connection)]

        return await self.middleware.aenqueue(rows, insert) if self.middleware else await insert(rows)

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
        inserted = self._insert(rows, connection)
        return WorkflowHandle(wf_id, {id(s): i for (s, _), i in zip(ordered, inserted)}, inserted)

    # -- operating: ``app.admin`` --------------------------------------------------------------

    @property
    def admin(self) -> Admin:
        """Every operator action (jobs, dead letters, schedules, workers, workflows, stats, audit).

        >>> app.admin.dead_letters.retry(Selection.of([41, 42]), actor="ops:alice")
        """
        found = self.__dict__.get("_admin")
        if found is None:
            found = self.__dict__["_admin"] = Admin(self)
        return found

    def now(self) -> datetime:
        """The database's clock."""
        return self.backend.now()

    @property
    def insights(self) -> Insights:
        """The store's monitoring side (stats, audit log, retention), sharing its connections."""
        backend = self.backend
        cached = self.__dict__.get("_insights")
        if cached is None or cached[0] is not backend:
            cached = self.__dict__["_insights"] = (backend, insights_for(backend))
        return cached[1]

    # -- deprecated operator methods: one release, then gone (use app.admin) -----------------

    def workflow(self, workflow_id: str) -> WorkflowStatus:
        deprecated("app.workflow()", "app.admin.workflows.status()")
        return self.admin.workflows.status(workflow_id)

    def cancel_workflow(self, workflow_id: str) -> int:
        deprecated("app.cancel_workflow()", "app.admin.workflows.cancel(actor=...)")
        return self.admin.workflows.cancel(workflow_id, actor=LEGACY_ACTOR)

    def retry_workflow(self, workflow_id: str) -> int:
        deprecated("app.retry_workflow()", "app.admin.workflows.retry(actor=...)")
        return self.admin.workflows.retry(workflow_id, actor=LEGACY_ACTOR)

    def get_job(self, job_id: int) -> Job:
        deprecated("app.get_job()", "app.admin.jobs.get()")
        return self.admin.jobs.get(job_id)

    async def aget_job(self, job_id: int) -> Job:
        deprecated("app.aget_job()", "app.admin.jobs.aget()")
        return await self.admin.jobs.aget(job_id)

    def list_jobs(self, *, limit: int = 100, before_id: int | None = None, **where: Any) -> list[Job]:
        deprecated("app.list_jobs()", "app.admin.jobs.list()")
        return self.admin.jobs.list(limit=limit, before_id=before_id, **where)

    def count_jobs(self, **where: Any) -> int:
        deprecated("app.count_jobs()", "app.admin.jobs.count()")
        return self.admin.jobs.count(**where)

    def dead_letters(self, *, limit: int = 100, before_id: int | None = None, **where: Any) -> list[Job]:
        deprecated("app.dead_letters()", "app.admin.dead_letters.list()")
        return self.admin.dead_letters.list(limit=limit, before_id=before_id, **where)

    def workers(self) -> list[WorkerInfo]:
        deprecated("app.workers()", "app.admin.workers.list()")
        return self.admin.workers.list()

    def retry(self, job_id: int) -> None:
        deprecated("app.retry()", "app.admin.jobs.retry(job_id, actor=...)")
        self.admin.jobs.retry(job_id, actor=LEGACY_ACTOR)

    def retry_jobs(self, **where: Any) -> int:
        """Was: an empty filter meant the whole DLQ; now an empty selection selects nothing."""
        deprecated("app.retry_jobs()", "app.admin.jobs.retry(Selection..., actor=...)")
        where.setdefault("state", JobState.DEAD)
        return self.admin.jobs.retry(Selection.matching(**where), actor=LEGACY_ACTOR)

    def cancel(self, job_id: int) -> None:
        deprecated("app.cancel()", "app.admin.jobs.cancel(job_id, actor=...)")
        self.admin.jobs.cancel(job_id, actor=LEGACY_ACTOR)

    def cancel_jobs(self, **where: Any) -> int:
        deprecated("app.cancel_jobs()", "app.admin.jobs.cancel(Selection..., actor=...)")
        return self.admin.jobs.cancel(Selection.matching(**where), actor=LEGACY_ACTOR)

    def purge(self, **where: Any) -> int:
        deprecated("app.purge()", "app.admin.jobs.purge(Selection..., actor=...)")
        where.setdefault("state", JobState.DEAD)
        return self.admin.jobs.purge(Selection.matching(**where), actor=LEGACY_ACTOR)

    def stats(self, window: float = 900.0, bucket: float = 10.0) -> Stats:
        deprecated("app.stats()", "app.admin.stats()")
        return self.admin.stats(window, bucket)

    async def astats(self) -> Stats:
        deprecated("app.astats()", "app.admin.astats()")
        return await self.admin.astats()

    def health(self) -> Health:
        deprecated("app.health()", "app.admin.health()")
        return self.admin.health()

    def thresholds(self) -> Thresholds:
        deprecated("app.thresholds()", "app.admin.thresholds()")
        return self.admin.thresholds()

    def audit(self, actor: str, action: str, target: str = "", **detail: Any) -> int:
        deprecated("app.audit()", "app.admin.audit.record()")
        return self.admin.audit.record(actor, action, target, **detail)

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        deprecated("app.audit_log()", "app.admin.audit.list()")
        return self.admin.audit.list(limit, before_id)

    def prune_policy(self, **overrides: Any) -> PruneParams:
        deprecated("app.prune_policy()", "app.admin.prune_policy()")
        return self.admin.prune_policy(**overrides)

    def prune(self, policy: PruneParams | None = None, on_batch: Callable[[int], Any] | None = None) -> int:
        deprecated("app.prune()", "app.admin.prune(actor=...)")
        return self.admin.prune(policy, actor=LEGACY_ACTOR, on_batch=on_batch)

    def prunable(self, policy: PruneParams | None = None) -> int:
        deprecated("app.prunable()", "app.admin.prunable()")
        return self.admin.prunable(policy)

    def forget_workers(self, older_than: float | None = None) -> int:
        deprecated("app.forget_workers()", "app.admin.workers.forget(actor=...)")
        return self.admin.workers.forget(older_than, actor=LEGACY_ACTOR)

    def recent_workflows(self, limit: int = 50) -> list[WorkflowSummary]:
        deprecated("app.recent_workflows()", "app.admin.workflows.list()")
        return self.admin.workflows.list(limit)

    def cron_list(self) -> list[Schedule]:
        deprecated("app.cron_list()", "app.admin.schedules.list()")
        return self.admin.schedules.list()

    def cron_pause(self, name: str) -> None:
        deprecated("app.cron_pause()", "app.admin.schedules.pause(actor=...)")
        self.admin.schedules.pause(name, actor=LEGACY_ACTOR)

    def cron_resume(self, name: str) -> None:
        deprecated("app.cron_resume()", "app.admin.schedules.resume(actor=...)")
        self.admin.schedules.resume(name, actor=LEGACY_ACTOR)

    def cron_trigger(self, name: str) -> int:
        deprecated("app.cron_trigger()", "app.admin.schedules.trigger(actor=...)")
        return self.admin.schedules.trigger(name, actor=LEGACY_ACTOR)

    def schedule(self, name: str) -> Schedule:
        deprecated("app.schedule()", "app.admin.schedules.get()")
        return self.admin.schedules.get(name)

    # -- schedules and limits --------------------------------------------------------------

    def cron(
        self, expression: str, job_type: str | NamedJob, payload: Any = None, *, name: str | None = None, tz: str | None = None,
        missed: str = "skip", **options: Any,
    ) -> CronSpec:
        """Enqueue ``job_type`` on a cron schedule: each fire once, however many workers run.

        Five fields, or six with seconds first; ``tz`` is an IANA zone (default UTC).
        ``missed``: fires that passed while no worker ran are skipped, or run once ("run_once").
        ``job_type`` is the job's handle or its name.

        >>> app.cron("0 0 * * *", "daily_sales_report", tz="Europe/Berlin")
        >>> app.cron("*/10 * * * * *", "poll_inbox", {"box": "orders"}, name="inbox", queue="io")
        """
        spec = declare_cron(expression, type_name(job_type), payload, name, tz, missed, options)
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
        worker is returned (``worker.replace``: it asks for a fresh process in its place).

        Logs at INFO to stderr in the CLI worker's format unless the application configured
        logging itself (then its handlers and levels apply).
        """
        from conveyor.logs import configure
        from conveyor.worker import Worker

        configure(only_if_unset=True)
        worker = Worker(self, **options)
        worker.run()
        return worker


LEGACY_ACTOR = "app"
"""The actor the deprecated facade methods record in the audit log (``app.admin`` takes one)."""


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


