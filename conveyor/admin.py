"""The operator surface (``app.admin``): every action on the queue, its state rules and its audit row, once.

The CLI, the admin API and the dashboard are thin shells over this object: they parse,
make one call here, and render. So "retry" means the same jobs whichever interface asks,
and every mutation leaves exactly one audit row (who, what, which jobs, how many).

Grouped by noun, each action a verb::

    app.admin.jobs.get/list/count/retry/cancel/purge/run_now/result/aresult
    app.admin.dead_letters.list/count/retry/purge
    app.admin.schedules.list/get/pause/resume/trigger/add/update/remove
    app.admin.queues.list/pause/resume
    app.admin.workers.list/forget
    app.admin.workflows.list/status/cancel/retry/result/aresult
    app.admin.audit.list/record
    app.admin.stats() / health() / prune() / prunable()

Bulk actions take a ``Selection``: explicit ids, a filter, or ``Selection.every()``. An empty
selection (no ids, or a filter that narrows nothing) selects nothing; acting on every job must
be asked for by name, and the audit row says so.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor import waiting
from conveyor.backends.base import JobFilter, NewSchedule, Schedule, WorkerInfo
from conveyor.backends.insights import AuditEntry, NewAuditEntry, PruneParams, SnapshotParams, WorkflowSummary
from conveyor.cron import Cron
from conveyor.cron import declare as declare_cron
from conveyor.errors import InvalidTransition, JobNotFound, ScheduleConflict, ScheduleNotFound, WorkflowError
from conveyor.job import FINISHED_STATES, Job, JobState
from conveyor.options import check_name
from conveyor.stats import Health, Stats, Thresholds, shape
from conveyor.workflow import WorkflowStatus, overall_state

if TYPE_CHECKING:
    from conveyor.app import Conveyor

RETRYABLE = (JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED)
"""What "retry" applies to, on every interface: a dead or cancelled job goes back to pending."""
CANCELLABLE = (JobState.WAITING, JobState.SCHEDULED, JobState.PENDING)
"""What cancelling a workflow applies to: its jobs that have not started (running ones finish)."""
STOPPABLE = (*CANCELLABLE, JobState.RUNNING)
"""What "cancel" applies to on a job: any unfinished one; a running job is stopped (see ``Jobs.cancel``)."""
"""What "cancel" applies to: jobs that have not started (a running job finishes its run)."""
PURGEABLE = tuple(s for s in JobState if s in FINISHED_STATES)
"""What "purge" deletes: finished jobs only (completed, dead, cancelled)."""

FILTER_KEYS = ("state", "queue", "type", "ids", "workflow_id", "created_after", "created_before")


@dataclass(frozen=True, slots=True)
class Selection:
    """The jobs a bulk action applies to: ``Selection.of(ids)``, ``Selection.matching(**filter)`` or
    ``Selection.every()``.

    An empty selection selects nothing (``Selection.of([])`` or a filter with no field), so a
    caller that built an empty list never acts on the whole queue by accident.
    """

    ids: tuple[int, ...] | None = None
    where: dict[str, Any] | None = None
    all: bool = False

    @classmethod
    def of(cls, ids: Sequence[int]) -> Selection:
        return cls(ids=tuple(int(i) for i in ids))

    @classmethod
    def matching(cls, **where: Any) -> Selection:
        """Jobs matching the filter: state, queue, type, ids, workflow_id, created_after/before."""
        unknown = sorted(set(where) - set(FILTER_KEYS))
        if unknown:
            raise TypeError(f"unknown filter {', '.join(unknown)}; known: {', '.join(FILTER_KEYS)}")
        if where.get("ids") is not None and not where["ids"]:
            return cls(ids=())  # an empty id list narrows to nothing, whatever else the filter says
        return cls(where={k: v for k, v in where.items() if v is not None and not (isinstance(v, list | tuple) and not v)})

    @classmethod
    def every(cls) -> Selection:
        """Every job (that the action applies to): the explicit, audited "all"."""
        return cls(all=True)

    @property
    def empty(self) -> bool:
        if self.all:
            return False
        return not self.ids if self.ids is not None else not self.where

    def narrowed(self, default_states: Sequence[JobState]) -> JobFilter | None:
        """The backend filter, limited to ``default_states`` (or to the asked ones among them); None selects nothing."""
        if self.empty:
            return None
        where = dict(self.where or {})
        if self.ids is not None:
            where["ids"] = self.ids
        asked = job_filter(**where)
        states = tuple(s for s in asked.states if s in default_states) if asked.states else tuple(default_states)
        if not states:
            return None
        return replace(asked, states=states)

    def describe(self) -> str:
        """What was asked for, for the audit row: ``ids:1,2,3``, ``filter:{...}`` or ``all``."""
        if self.all:
            return "all"
        if self.ids is not None:
            shown = ",".join(map(str, self.ids[:50]))
            return f"ids:{shown}" + (f" (+{len(self.ids) - 50} more)" if len(self.ids) > 50 else "") if self.ids else "ids:(none)"
        return "filter:" + (json.dumps(self.where, default=str, sort_keys=True) if self.where else "(none)")


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


class _Part:
    """One noun of the surface, sharing the app and the audit writer."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin
        self._app = admin.app


class Jobs(_Part):
    """Any job: read, and retry (dead, cancelled), cancel (not started) or purge (finished)."""

    def get(self, job_id: int) -> Job:
        job = self._app.backend.job_get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def aget(self, job_id: int) -> Job:
        return await asyncio.to_thread(self.get, job_id)

    def list(self, *, limit: int = 100, before_id: int | None = None, **where: Any) -> builtins.list[Job]:
        """Newest first; filter by state, queue, type, ids, workflow_id, created_after/before."""
        return self._app.backend.jobs_list(job_filter(**where), limit=limit, before_id=before_id)

    def count(self, **where: Any) -> int:
        return self._app.backend.jobs_count(job_filter(**where))

    def retry(self, target: int | Selection, *, actor: str) -> int:
        """Send dead or cancelled jobs back to pending with fresh attempts; one job id: 409-style error otherwise."""
        return self._act("retry", target, RETRYABLE, self._app.backend.jobs_retry, actor)

    def cancel(self, target: int | Selection, *, actor: str) -> int:
        """Cancel unfinished jobs. A running one is stopped: it is cancelled at once in the database,
        the worker holding it hears it at once on PostgreSQL (NOTIFY) or with its next lease
        renewal, sets ``ctx.cancelled`` and cancels an async handler's task; the run is never
        retried and whatever it writes back later is ignored (fenced by its lease)."""
        return self._act("cancel", target, STOPPABLE, lambda where: self._app.backend.jobs_cancel(where, running=True), actor)

    def run_now(self, job_id: int, *, actor: str) -> None:
        """Make a scheduled job (delayed, or waiting out a retry's backoff) due now; attempts unchanged."""
        if not self._app.backend.jobs_run_now(job_id):
            raise InvalidTransition(job_id, self.get(job_id).state, "run now")
        self._admin.audit.record(actor, "job.run_now", f"job:{job_id}")

    def result(self, job_id: int, timeout: float | None = None) -> Any:
        """Wait until the job finishes and return its result (JSON as stored); ``JobFailed`` (with
        its last error) if it ended dead, cancelled or expired, ``ResultTimeout`` after ``timeout``
        seconds (None: no limit). Woken by the store's change feed, never a tight poll.

        >>> app.admin.jobs.result(job_id, timeout=30)
        {'width': 640}
        """
        return waiting.wait(self._app, waiting.job_check(self._app, job_id), timeout, f"job {job_id}").result

    async def aresult(self, job_id: int, timeout: float | None = None) -> Any:
        job = await waiting.await_(self._app, waiting.job_check(self._app, job_id), timeout, f"job {job_id}")
        return job.result

    def purge(self, target: int | Selection, *, actor: str) -> int:
        """Delete finished jobs (completed, dead, cancelled) and their step marks."""
        return self._act("purge", target, PURGEABLE, self._app.backend.jobs_purge, actor)

    def _act(self, verb: str, target: int | Selection, states: Sequence[JobState], apply: Callable[[JobFilter], int], actor: str) -> int:
        if isinstance(target, Selection):
            return self._admin.bulk(f"jobs.{verb}", target, states, apply, actor)
        if not apply(JobFilter(ids=(target,), states=tuple(states))):
            raise InvalidTransition(target, self.get(target).state, verb)
        self._admin.audit.record(actor, f"job.{verb}", f"job:{target}")
        return 1


class DeadLetters(_Part):
    """The dead-letter queue: jobs that ran out of attempts or could not run."""

    def list(self, *, limit: int = 100, before_id: int | None = None, **where: Any) -> builtins.list[Job]:
        return self._admin.jobs.list(limit=limit, before_id=before_id, **{**where, "state": JobState.DEAD})

    def count(self, **where: Any) -> int:
        return self._admin.jobs.count(**{**where, "state": JobState.DEAD})

    def retry(self, selection: Selection, *, actor: str) -> int:
        return self._admin.bulk("dlq.retry", selection, (JobState.DEAD,), self._app.backend.jobs_retry, actor)

    def purge(self, selection: Selection, *, actor: str) -> int:
        return self._admin.bulk("dlq.purge", selection, (JobState.DEAD,), self._app.backend.jobs_purge, actor)


class Schedules(_Part):
    """Cron schedules: the declared ones (written on first read) and their operator pauses."""

    def list(self) -> builtins.list[Schedule]:
        """Every schedule with its next fire time, soonest first (disabled ones: no longer declared)."""
        rows = self._app.backend.schedules_list()
        if set(self._app.registry.schedules) - {s.name for s in rows}:  # declared here, not written yet
            self._app.cron_sync(replace=False)
            rows = self._app.backend.schedules_list()
        return rows

    def get(self, name: str) -> Schedule:
        for found in self.list():
            if found.name == name:
                return found
        raise ScheduleNotFound(name)

    def pause(self, name: str, *, actor: str) -> None:
        """Stop firing ``name`` until resumed (fires while paused are skipped)."""
        self.get(name)
        self._app.backend.schedule_set(name, paused=True)
        self._admin.audit.record(actor, "cron.pause", f"cron:{name}")

    def resume(self, name: str, *, actor: str) -> None:
        """Fire ``name`` again from its next fire time after now."""
        found = self.get(name)
        if found.paused:
            next_fire = Cron(found.expression, found.tz).next_after(self._app.now())
            self._app.backend.schedule_set(name, paused=False, next_fire_at=next_fire)
        self._admin.audit.record(actor, "cron.resume", f"cron:{name}")

    def trigger(self, name: str, *, actor: str) -> int:
        """Enqueue the schedule's job now, outside its timetable; returns the job id."""
        found = self.get(name)
        job_id = self._app.enqueue(found.job_type, found.payload, **found.options)
        self._admin.audit.record(actor, "cron.trigger", f"cron:{name}", job_id=job_id)
        return job_id


    def add(self, name: str, expression: str, job_type: str, payload: Any = None, *, actor: str, tz: str | None = None,
            missed: str = "skip", **options: Any) -> Schedule:
        """Add a schedule at run time, stored next to those declared in code and fired the same way
        (every worker sees it within a second). A code declaration of the same name replaces it
        when a worker starts: code wins.

        >>> app.admin.schedules.add("nightly-export", "0 2 * * *", "export", {"format": "csv"}, actor="ops", tz="Europe/Paris")
        """
        found = self._put(name, expression, job_type, payload, tz, missed, options, create=True)
        self._admin.audit.record(actor, "cron.add", f"cron:{name}", expression=found.expression, job_type=job_type)
        return found

    def update(self, name: str, expression: str, job_type: str, payload: Any = None, *, actor: str, tz: str | None = None,
               missed: str = "skip", **options: Any) -> Schedule:
        """Change a schedule added at run time (one declared in code is changed in the code)."""
        found = self._put(name, expression, job_type, payload, tz, missed, options, create=False)
        self._admin.audit.record(actor, "cron.update", f"cron:{name}", expression=found.expression, job_type=job_type)
        return found

    def remove(self, name: str, *, actor: str) -> None:
        """Remove a schedule added at run time; jobs it already enqueued stay."""
        found = self.get(name)
        if found.source != "runtime" or not self._app.backend.schedule_remove(name):
            raise ScheduleConflict(name, "declared in code: remove it from the code (or pause it)")
        self._admin.audit.record(actor, "cron.remove", f"cron:{name}")

    def _put(self, name: str, expression: str, job_type: str, payload: Any, tz: str | None, missed: str,
             options: dict[str, Any], create: bool) -> Schedule:
        spec = declare_cron(expression, job_type, payload, name, tz, missed, options)
        job = self._app.new_job(spec.job_type, spec.payload, spec.options)  # the type, payload and options must be valid
        row = NewSchedule(spec.name, spec.cron.expression, spec.cron.tz, spec.job_type, job.payload,
                          json.dumps(spec.options), spec.missed.value, spec.cron.next_after(self._app.now()))
        if not self._app.backend.schedule_put(row, create):
            if create:
                raise ScheduleConflict(name, "a schedule with this name exists already")
            found = self.get(name)  # ScheduleNotFound when there is none
            raise ScheduleConflict(name, f"declared in code ({found.expression!r}): change it in the code")
        return self.get(name)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as operators see it: paused or not (since ``paused_at``), and its jobs by state."""

    name: str
    paused: bool
    paused_at: datetime | None
    counts: dict[str, int]


class Queues(_Part):
    """Queues, and their pauses: held in the database, so every worker stops claiming from a
    paused queue within a second; running jobs finish and enqueueing still works."""

    def list(self) -> builtins.list[QueueInfo]:
        """Every queue the app declares, has jobs in, or has paused."""
        stats = self._admin.stats()
        return [QueueInfo(q.queue, q.queue in stats.paused, stats.paused.get(q.queue), q.counts) for q in stats.queues if q.queue]

    def pause(self, name: str, *, actor: str) -> bool:
        """Stop every worker claiming from ``name``; False if it was paused already."""
        changed = self._app.backend.queue_pause(check_name("queue", name), True)
        self._admin.audit.record(actor, "queue.pause", f"queue:{name}", changed=changed)
        return changed

    def resume(self, name: str, *, actor: str) -> bool:
        """Let workers claim from ``name`` again (they are woken at once); False if it was not paused."""
        changed = self._app.backend.queue_pause(check_name("queue", name), False)
        self._admin.audit.record(actor, "queue.resume", f"queue:{name}", changed=changed)
        return changed


class Workers(_Part):
    def list(self) -> builtins.list[WorkerInfo]:
        """Every worker row, live or not (``conveyor.stats.is_live`` tells which)."""
        return self._app.backend.workers_list()

    def forget(self, older_than: float | None = None, *, actor: str) -> int:
        """Drop worker rows whose heartbeat is older than ``older_than`` seconds (default: an hour)."""
        age = older_than if older_than is not None else max(3600.0, self._app.settings.worker_stale_after)
        count = self._app.insights.workers_forget(age)
        self._admin.audit.record(actor, "workers.forget", f"older_than:{age:g}s", count=count)
        return count


class Workflows(_Part):
    def list(self, limit: int = 50) -> builtins.list[WorkflowSummary]:
        """The newest workflows with their jobs counted by state."""
        return self._app.insights.workflows_recent(limit)

    def status(self, workflow_id: str) -> WorkflowStatus:
        """The workflow's jobs, edges and overall state (running, completed, failed, cancelled)."""
        jobs = self._app.backend.workflow_jobs(workflow_id)
        if not jobs:
            raise WorkflowError(f"no workflow with id {workflow_id!r}")
        edges = self._app.backend.job_edges([j.id for j in jobs])
        return WorkflowStatus(workflow_id, overall_state(j.state.value for j in jobs), tuple(jobs), tuple(edges))

    def cancel(self, workflow_id: str, *, actor: str) -> int:
        """Cancel every job of the workflow that has not started; running jobs finish."""
        count = self._app.backend.jobs_cancel(JobFilter(workflow_id=workflow_id, states=CANCELLABLE))
        self._admin.audit.record(actor, "workflow.cancel", f"workflow:{workflow_id}", count=count)
        return count

    def retry(self, workflow_id: str, *, actor: str) -> int:
        """Retry a failed workflow from its dead jobs; what they cancelled waits for them again."""
        count = self._app.backend.workflow_retry(workflow_id)
        self._admin.audit.record(actor, "workflow.retry", f"workflow:{workflow_id}", count=count)
        return count


    def result(self, workflow_id: str, timeout: float | None = None) -> WorkflowStatus:
        """Wait until every job of the workflow finished: its status if all completed, otherwise
        ``WorkflowFailed`` naming the first job that did not complete and its last error."""
        return waiting.wait(self._app, waiting.workflow_check(self._app, workflow_id), timeout, f"workflow {workflow_id}")

    async def aresult(self, workflow_id: str, timeout: float | None = None) -> WorkflowStatus:
        return await waiting.await_(self._app, waiting.workflow_check(self._app, workflow_id), timeout, f"workflow {workflow_id}")


class Audit(_Part):
    """Who did what, on what, and how many jobs it touched."""

    def list(self, limit: int = 100, before_id: int | None = None) -> builtins.list[AuditEntry]:
        return self._app.insights.audit_list(limit, before_id)

    def record(self, actor: str, action: str, target: str = "", **detail: Any) -> int:
        """One audit row; the admin's own mutations call this, and so may an app's own operator actions."""
        if self._admin.channel is not None:
            detail.setdefault("via", self._admin.channel)
        return self._app.insights.audit_record(NewAuditEntry(actor, action, target, detail))


@dataclass
class Admin:
    """Every operator action on ``app``'s queue (see the module docstring)."""

    app: Conveyor
    channel: str | None = None  # the interface acting ("cli", "api", "dashboard"), recorded as ``via`` in audit rows
    jobs: Jobs = field(init=False)
    dead_letters: DeadLetters = field(init=False)
    schedules: Schedules = field(init=False)
    workers: Workers = field(init=False)
    workflows: Workflows = field(init=False)
    queues: Queues = field(init=False)
    audit: Audit = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = Jobs(self)
        self.dead_letters = DeadLetters(self)
        self.schedules = Schedules(self)
        self.workers = Workers(self)
        self.workflows = Workflows(self)
        self.queues = Queues(self)
        self.audit = Audit(self)

    def via(self, channel: str) -> Admin:
        """The same surface, its audit rows marked ``via=channel`` (which interface acted)."""
        return Admin(self.app, channel)

    def bulk(self, action: str, selection: Selection, states: Sequence[JobState], apply: Callable[[JobFilter], int], actor: str) -> int:
        """Apply a bulk action to the selection within ``states`` and record what it matched and how many."""
        where = selection.narrowed(states)
        count = apply(where) if where is not None else 0
        self.audit.record(actor, action, selection.describe(), count=count, states=[s.value for s in states])
        return count

    # -- monitoring -----------------------------------------------------------------------

    def stats(self, window: float = 900.0, bucket: float = 10.0) -> Stats:
        """Counts, throughput, failure rate, run and wait times per queue and type, and health.

        >>> app.admin.stats().queues[0].counts["pending"]
        """
        snapshot = self.app.insights.stats_snapshot(SnapshotParams(window=window, bucket=bucket))
        return shape(snapshot, self.workers.list(), self.thresholds(), self.app.registry.queues())

    async def astats(self, window: float = 900.0, bucket: float = 10.0) -> Stats:
        return await asyncio.to_thread(self.stats, window, bucket)

    def health(self) -> Health:
        """``ok``, or ``degraded`` with the checks that failed (DLQ growth, old due jobs, no live worker)."""
        return self.stats().health

    def thresholds(self) -> Thresholds:
        s = self.app.settings
        return Thresholds(s.health_pending_age, s.health_dead_growth, s.worker_stale_after)

    # -- retention ------------------------------------------------------------------------

    def prune_policy(self, **overrides: Any) -> PruneParams:
        """The retention policy from settings; ``overrides`` use PruneParams' field names."""
        s = self.app.settings
        policy = PruneParams(s.retain_completed, s.retain_cancelled, s.retain_completed_per_type, s.prune_batch)
        return replace(policy, **{k: v for k, v in overrides.items() if v is not None})

    def prune(self, policy: PruneParams | None = None, *, actor: str, on_batch: Callable[[int], Any] | None = None) -> int:
        """Delete finished jobs the policy no longer keeps, in short batches; dead jobs stay.

        >>> app.admin.prune(app.admin.prune_policy(keep_completed_per_type=1000), actor="ops")
        """
        policy = policy or self.prune_policy()
        total = 0
        while True:
            removed = self.app.insights.jobs_prune(policy)
            total += removed
            if on_batch is not None and removed:
                on_batch(removed)
            if removed < policy.limit:
                break
        self.audit.record(actor, "jobs.prune", "retention", count=total)
        return total

    def prunable(self, policy: PruneParams | None = None) -> int:
        """How many jobs ``prune`` would delete now (for progress bars and dry runs)."""
        return self.app.insights.jobs_prunable(policy or self.prune_policy())
