"""The admin API (JSON under ``/api``): read the queue, steer it, and leave an audit trail.

Every route needs a token (``auth.reader``); every mutation needs a read-write one
(``auth.writer``) and is written to the audit log with the token's name.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from conveyor.app import Conveyor
from conveyor.backends.insights import AuditEntry, WorkflowSummary
from conveyor.errors import ConveyorError
from conveyor.job import Job, JobState
from conveyor.stats import Health, Stats, is_live
from conveyor.web.auth import Identity, reader, writer
from conveyor.web.schemas import ActionResult, JobId, JobPage, Limit, Name, PageQuery, Problem, SelectionIn, WorkerOut

Reader = Annotated[Identity, Depends(reader)]
Writer = Annotated[Identity, Depends(writer)]
PathId = Annotated[int, Path(ge=1, le=2**63 - 1)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No valid bearer token"},
    422: {"description": "Invalid parameters"},
}
MUTATION_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 403: {"model": Problem, "description": "Read-only token"}}
ONE_JOB: dict[int | str, dict[str, Any]] = {
    **MUTATION_ERRORS,
    404: {"model": Problem, "description": "No such job"},
    409: {"model": Problem, "description": "The job's state does not allow this"},
}

router = APIRouter(prefix="/api", responses=ERRORS)


def conveyor(request: Request) -> Conveyor:
    app: Conveyor = request.app.state.conveyor
    return app


App = Annotated[Conveyor, Depends(conveyor)]


def page(app: Conveyor, query: PageQuery, **forced: Any) -> JobPage:
    where = {**query.where(), **forced}
    jobs = app.admin.jobs.list(limit=query.limit + 1, before_id=query.before_id, **where)
    more = len(jobs) > query.limit
    jobs = jobs[: query.limit]
    return JobPage(jobs=jobs, next_before_id=jobs[-1].id if more else None)


# -- monitoring -----------------------------------------------------------------------


@router.get("/stats", response_model=Stats, summary="Counts, throughput, failure rate, run and wait times, health")
def get_stats(_: Reader, app: App) -> Stats:
    return app.admin.stats()


@router.get("/health", response_model=Health, summary="ok, or degraded with the failing checks")
def get_health(_: Reader, app: App) -> Health:
    return app.admin.health()


# -- jobs ---------------------------------------------------------------------------


@router.get("/jobs", response_model=JobPage, summary="List and filter jobs, newest first")
def list_jobs(_: Reader, app: App, query: Annotated[PageQuery, Query()]) -> JobPage:
    return page(app, query)


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"model": Problem}}, summary="One job with its whole error history")
def get_job(_: Reader, app: App, job_id: PathId) -> Job:
    return app.admin.jobs.get(job_id)


@router.post("/jobs/{job_id}/retry", response_model=ActionResult, responses=ONE_JOB, summary="Send a dead or cancelled job back to pending")
def retry_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    return ActionResult(action="retry", count=app.admin.via("api").jobs.retry(job_id, actor=who.name))


@router.post("/jobs/{job_id}/cancel", response_model=ActionResult, responses=ONE_JOB, summary="Cancel a job that has not started")
def cancel_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    return ActionResult(action="cancel", count=app.admin.via("api").jobs.cancel(job_id, actor=who.name))


@router.delete("/jobs/{job_id}", response_model=ActionResult, responses=ONE_JOB, summary="Purge one finished job")
def purge_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    return ActionResult(action="purge", count=app.admin.via("api").jobs.purge(job_id, actor=who.name))


@router.post("/jobs/retry", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Retry dead/cancelled jobs: ids, filter or all")
def retry_jobs(who: Writer, app: App, selection: SelectionIn) -> ActionResult:
    return ActionResult(action="retry", count=app.admin.via("api").jobs.retry(selection.chosen(), actor=who.name))


@router.post("/jobs/cancel", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Cancel unstarted jobs: ids, filter or all")
def cancel_jobs(who: Writer, app: App, selection: SelectionIn) -> ActionResult:
    return ActionResult(action="cancel", count=app.admin.via("api").jobs.cancel(selection.chosen(), actor=who.name))


@router.post("/jobs/purge", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Delete finished jobs: ids, filter or all")
def purge_jobs(who: Writer, app: App, selection: SelectionIn) -> ActionResult:
    return ActionResult(action="purge", count=app.admin.via("api").jobs.purge(selection.chosen(), actor=who.name))


# -- dead-letter queue --------------------------------------------------------------


@router.get("/dlq", response_model=JobPage, summary="The dead-letter queue, newest first")
def list_dead(_: Reader, app: App, query: Annotated[PageQuery, Query()]) -> JobPage:
    return page(app, query, state=JobState.DEAD)


@router.post("/dlq/retry", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Retry dead jobs: ids, filter or all")
def retry_dead(who: Writer, app: App, selection: SelectionIn) -> ActionResult:
    return ActionResult(action="retry", count=app.admin.via("api").dead_letters.retry(selection.chosen(), actor=who.name))


@router.post("/dlq/purge", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Delete dead jobs: ids, filter or all")
def purge_dead(who: Writer, app: App, selection: SelectionIn) -> ActionResult:
    return ActionResult(action="purge", count=app.admin.via("api").dead_letters.purge(selection.chosen(), actor=who.name))


# -- cron ---------------------------------------------------------------------------


@router.get("/cron", response_model=list[dict[str, Any]], summary="Cron schedules with next fire times")
def list_cron(_: Reader, app: App) -> list[dict[str, Any]]:
    return [dataclasses.asdict(s) for s in app.admin.schedules.list()]


@router.post(
    "/cron/{name}/{action}",
    response_model=ActionResult,
    responses={**MUTATION_ERRORS, 404: {"model": Problem}},
    summary="Pause, resume or trigger a schedule now",
)
def cron_action(who: Writer, app: App, name: Annotated[Name, Path()], action: Annotated[str, Path(pattern="^(pause|resume|trigger)$")]) -> ActionResult:
    schedules = app.admin.via("api").schedules
    {"pause": schedules.pause, "resume": schedules.resume, "trigger": schedules.trigger}[action](name, actor=who.name)
    return ActionResult(action=action, count=1)


# -- workers, workflows, audit --------------------------------------------------------


@router.get("/workers", response_model=list[WorkerOut], summary="Workers with their last heartbeat")
def list_workers(_: Reader, app: App) -> list[WorkerOut]:
    now = app.now()
    return [
        WorkerOut(
            worker=w,
            live=is_live(w, now, app.settings.worker_stale_after),
            heartbeat_age=None if w.heartbeat_at is None else (now - w.heartbeat_at).total_seconds(),
        )
        for w in app.admin.workers.list()
    ]


@router.post("/workers/forget", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Drop rows of workers silent this long")
def forget_workers(who: Writer, app: App, older_than: Annotated[float, Query(ge=0, le=10 * 365 * 86400)] = 3600.0) -> ActionResult:
    return ActionResult(action="forget", count=app.admin.via("api").workers.forget(older_than, actor=who.name))


@router.get("/workflows", response_model=list[WorkflowSummary], summary="The newest workflows, jobs counted by state")
def list_workflows(_: Reader, app: App, limit: Annotated[Limit, Query()] = 50) -> list[WorkflowSummary]:
    return app.admin.workflows.list(limit)


@router.get("/workflows/{workflow_id}", response_model=JobPage, responses={404: {"model": Problem}}, summary="A workflow's jobs")
def get_workflow(_: Reader, app: App, workflow_id: Annotated[Name, Path()]) -> JobPage:
    try:
        status = app.admin.workflows.status(workflow_id)
    except ConveyorError as exc:
        raise HTTPException(404, str(exc)) from exc
    return JobPage(jobs=sorted(status.jobs, key=lambda j: j.id), next_before_id=None)


@router.post(
    "/workflows/{workflow_id}/{action}",
    response_model=ActionResult,
    responses=MUTATION_ERRORS,
    summary="Cancel a workflow's unstarted jobs, or retry a failed workflow from its dead jobs",
)
def workflow_action(who: Writer, app: App, workflow_id: Annotated[Name, Path()], action: Annotated[str, Path(pattern="^(cancel|retry)$")]) -> ActionResult:
    workflows = app.admin.via("api").workflows
    return ActionResult(action=action, count={"cancel": workflows.cancel, "retry": workflows.retry}[action](workflow_id, actor=who.name))


@router.get("/audit", response_model=list[AuditEntry], summary="Every mutating action: who, what, when")
def list_audit(_: Reader, app: App, limit: Annotated[Limit, Query()] = 100, before_id: Annotated[JobId | None, Query()] = None) -> list[AuditEntry]:
    return app.admin.audit.list(limit, before_id)
