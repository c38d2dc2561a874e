"""ConveyorBackend: Django Tasks stored as Conveyor jobs in Django's own database, inside its transaction.

Every task is one Conveyor job of type ``django_task`` whose payload names the task and carries
its arguments; Django's ``priority`` (-100..100, higher first), ``queue_name`` and ``run_after``
map to the job's priority, queue and run_at. ``get_result(id)`` reads the job back: pending,
scheduled or waiting is READY, running is RUNNING, completed is SUCCESSFUL with the task's
return value, dead or cancelled is FAILED with each attempt's error.

OPTIONS:
    ``DATABASE``      Django database alias the jobs live in (default ``"default"``).
    ``APP``           ``"module:attribute"`` of your own ``Conveyor`` (to use ``@app.job`` as well,
                      with its settings); it must point at that same database. Without it, a
                      Conveyor is made on the database from ``DATABASES``.
    ``MAX_ATTEMPTS``  runs of a task before it is FAILED (default 1, as Django Tasks expects; more
                      retries with Conveyor's backoff, the result staying READY between runs).
"""

from __future__ import annotations

import builtins
import importlib
import os
import threading
from collections.abc import Iterable
from typing import Any, TypeVar, cast
from urllib.parse import quote

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from pydantic import BaseModel

from conveyor.app import Conveyor
from conveyor.contrib.django.tasks import (
    BaseTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from conveyor.errors import JobNotFound
from conveyor.job import Job, JobState

JOB_TYPE = "django_task"
T = TypeVar("T")

STATUS: dict[JobState, Any] = {
    JobState.WAITING: TaskResultStatus.READY,
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.PENDING: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.DEAD: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}


class TaskCall(BaseModel):
    """The job's payload: which task, with what."""

    task: str  # the Task object's import path (module.function)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class ConveyorBackend(BaseTaskBackend):
    """A Django Tasks backend whose queue is Conveyor's, in the same database as your models."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database: str = self.options.get("DATABASE", "default")
        self.max_attempts = int(self.options.get("MAX_ATTEMPTS", 1))
        if self.max_attempts < 1:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['MAX_ATTEMPTS'] must be at least 1, not {self.max_attempts}")
        self._app: Conveyor | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Conveyor:
        """The Conveyor the tasks are queued in, made on first use (no I/O at start-up)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._make_app()
        return self._app

    def _make_app(self) -> Conveyor:
        path = self.options.get("APP")
        app = load_app(path) if path else Conveyor(database_url(self.database))
        flavour = app.backend.flavour  # type: ignore[attr-defined]
        vendor = connections[self.database].vendor
        if {"sqlite": "sqlite", "postgres": "postgresql"}[flavour] != vendor:
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}]: the Conveyor app's database is {flavour} but Django's {self.database!r} is {vendor}; "
                "jobs must live in the database whose transactions they join"
            )
        if JOB_TYPE not in app.registry:
            app.job(JOB_TYPE, max_attempts=self.max_attempts)(run_task)
        return app

    # -- enqueue ------------------------------------------------------------------------

    def enqueue(self, task: Task[Any, T], args: Any, kwargs: Any) -> TaskResult[T]:
        """Store the task as a job, in the transaction open on the database (or a transaction of its own)."""
        self.validate_task(task)
        options: dict[str, Any] = {"queue": task.queue_name, "priority": task.priority}
        if task.run_after is not None:
            options["run_at"] = task.run_after
        payload = TaskCall(task=task.module_path, args=list(args), kwargs=dict(kwargs)).model_dump()
        app = self.app
        with transaction.atomic(using=self.database):  # a savepoint inside the caller's atomic block
            job_id = app.enqueue(JOB_TYPE, payload, connection=connections[self.database], **options)
        # Built here, not read back: inside the caller's block no other connection can see the job yet.
        return TaskResult(
            task=task, id=str(job_id), status=cast(Any, TaskResultStatus.READY), enqueued_at=timezone.now(), started_at=None,
            finished_at=None, last_attempted_at=None, args=payload["args"], kwargs=payload["kwargs"], backend=self.alias,
            errors=[], worker_ids=[],
        )

    # -- results ------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult[Any]:
        try:
            job = self.app.admin.jobs.get(int(result_id))
        except (ValueError, JobNotFound):
            raise TaskResultDoesNotExist(result_id) from None
        if job.type != JOB_TYPE:
            raise TaskResultDoesNotExist(result_id)
        call = TaskCall.model_validate(job.payload)
        try:
            task = import_string(call.task)
        except ImportError:
            raise TaskResultDoesNotExist(f"{result_id}: its task {call.task!r} can no longer be imported") from None
        return self._result(task, job)

    def _result(self, task: Task[Any, T], job: Job) -> TaskResult[T]:
        result: TaskResult[T] = TaskResult(
            task=task,
            id=str(job.id),
            status=STATUS[job.state],
            enqueued_at=job.created_at,
            started_at=job.attempted_at,
            finished_at=job.finished_at,
            last_attempted_at=job.attempted_at,
            args=job.payload.get("args", []),
            kwargs=job.payload.get("kwargs", {}),
            backend=self.alias,
            errors=[TaskError(exception_class_path=exception_path(e.error), traceback=e.traceback or e.error) for e in job.errors],
            worker_ids=worker_ids(job),
        )
        if job.state is JobState.COMPLETED:
            object.__setattr__(result, "_return_value", job.result)
        return result

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        if self.database not in connections.settings:
            yield checks.Error(f"TASKS[{self.alias!r}]['OPTIONS']['DATABASE'] names no database: {self.database!r}", id="conveyor.E001")


def run_task(call: TaskCall, ctx: Any) -> Any:
    """The handler of every Django task: import it, call it (async ones too), return its JSON result."""
    close_old_connections()  # a worker thread reuses Django connections across runs, as a request would
    try:
        task: Task[Any, Any] = import_string(call.task)
        if task.takes_context:
            backend = task.get_backend()
            partial: TaskResult[Any] = TaskResult(
                task=task, id=str(ctx.job.id), status=cast(Any, TaskResultStatus.RUNNING), enqueued_at=ctx.job.created_at,
                started_at=ctx.job.attempted_at, finished_at=None, last_attempted_at=ctx.job.attempted_at, args=call.args,
                kwargs=call.kwargs, backend=getattr(backend, "alias", task.backend), errors=[], worker_ids=worker_ids(ctx.job),
            )
            return task.call(TaskContext(task_result=partial), *call.args, **call.kwargs)
        return task.call(*call.args, **call.kwargs)
    finally:
        close_old_connections()


def worker_ids(job: Job) -> list[str]:
    """One entry per attempt made so far (Django counts attempts by its workers)."""
    ids = [e.worker_id or "" for e in job.errors if e.attempt > 0]
    if job.state in (JobState.RUNNING, JobState.COMPLETED) and job.worker_id:
        ids.append(job.worker_id)
    while len(ids) < job.attempt:
        ids.append(job.worker_id or "")
    return ids[: max(job.attempt, 0)]


def exception_path(error: str) -> str:
    """Conveyor keeps ``Type: message``; Django wants an import path, so builtins get theirs."""
    name = error.split(":", 1)[0].strip()
    return f"builtins.{name}" if isinstance(getattr(builtins, name, None), type) else name


def load_app(path: str) -> Conveyor:
    module, _, attribute = path.partition(":")
    try:
        app = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(f"TASKS OPTIONS APP {path!r}: cannot import it ({exc}); expected 'module:attribute'") from exc
    if not isinstance(app, Conveyor):
        raise ImproperlyConfigured(f"TASKS OPTIONS APP {path!r} is a {type(app).__name__}, not a Conveyor")
    return app


def database_url(alias: str) -> str:
    """Conveyor's URL for a Django database (SQLite file or PostgreSQL)."""
    try:
        db = connections.settings[alias]
    except KeyError:
        raise ImproperlyConfigured(f"Conveyor task backend: no database {alias!r} in DATABASES") from None
    engine = db["ENGINE"]
    if engine.endswith("sqlite3"):
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise ImproperlyConfigured(f"Conveyor needs a SQLite file its workers can open, not {name!r} (DATABASES[{alias!r}])")
        return f"sqlite:///{os.path.abspath(name)}"
    if engine.endswith(("postgresql", "postgis")):
        auth = quote(db.get("USER") or "", safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = db.get("HOST") or "localhost"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, str | int))
        return f"postgresql://{auth + '@' if auth else ''}{host}{port}/{quote(db['NAME'], safe='')}" + (f"?{query}" if query else "")
    raise ImproperlyConfigured(f"Conveyor supports SQLite and PostgreSQL databases, not {engine} (DATABASES[{alias!r}])")

