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
from conveyor.errors import ConveyorError, JobFailed, ResultTimeout
from conveyor.job import Job, JobState
from conveyor.stats import Health, Stats, is_live
from conveyor.web.auth import Identity, reader, writer
from conveyor.web.schemas import (
    ActionResult,
    JobId,
    JobPage,
    Limit,
    Name,
    NewScheduleIn,
    PageQuery,
    Problem,
    QueueOut,
    ResultOut,
    ScheduleIn,
    SelectionIn,
    WorkerOut,
)

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


@router.post("/jobs/{job_id}/cancel", response_model=ActionResult, responses=ONE_JOB, summary="Cancel an unfinished job; a running one is stopped")
def cancel_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    return ActionResult(action="cancel", count=app.admin.via("api").jobs.cancel(job_id, actor=who.name))


@router.post("/jobs/{job_id}/run-now", response_model=ActionResult, responses=ONE_JOB, summary="Make a scheduled job due now")
def run_job_now(who: Writer, app: App, job_id: PathId) -> ActionResult:
    app.admin.via("api").jobs.run_now(job_id, actor=who.name)
    return ActionResult(action="run-now", count=1)


@router.get(
    "/jobs/{job_id}/result",
    response_model=ResultOut,
    responses={404: {"model": Problem}, 408: {"model": Problem, "description": "Not finished within the timeout"},
               409: {"model": Problem, "description": "The job ended dead, cancelled or expired"}},
    summary="Wait up to `timeout` seconds for the job to finish; its result",
)
async def job_result(_: Reader, app: App, job_id: PathId, timeout: Annotated[float, Query(ge=0, le=60)] = 0) -> ResultOut:
    try:
        result = await app.admin.jobs.aresult(job_id, timeout=timeout)
    except ResultTimeout as exc:
        raise HTTPException(408, str(exc)) from exc
    except JobFailed as exc:
        raise HTTPException(409, str(exc)) from exc
    return ResultOut(job_id=job_id, state="completed", result=result)


@router.delete("/jobs/{job_id}", response_model=ActionResult, responses=ONE_JOB, summary="Purge one finished job")
def purge_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    return ActionResult(action="purge", count=app.admin.via("api").jobs.purge(job_id, actor=who.name))


@router.post("/jobs/retry", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Retry dead/cancelled jobs: ids, filter or all")
def retry_jobs(who: Writer, app: App, selection: SelectionIn) -> ActionResult:
    return ActionResult(action="retry", count=app.admin.via("api").jobs.retry(selection.chosen(), actor=who.name))


@router.post("/jobs/cancel", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Cancel unfinished jobs (running ones are stopped): ids, filter or all")
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


@router.post("/cron", response_model=ActionResult, responses={**MUTATION_ERRORS, 409: {"model": Problem}}, summary="Add a schedule at run time")
def add_schedule(who: Writer, app: App, body: NewScheduleIn) -> ActionResult:
    schedules = app.admin.via("api").schedules
    schedules.add(body.name, body.expression, body.job_type, body.payload, actor=who.name, tz=body.tz, missed=body.missed, **body.options)
    return ActionResult(action="add", count=1)


@router.put("/cron/{name}", response_model=ActionResult, responses={**MUTATION_ERRORS, 404: {"model": Problem}, 409: {"model": Problem}},
            summary="Change a schedule added at run time")
def update_schedule(who: Writer, app: App, name: Annotated[Name, Path()], body: ScheduleIn) -> ActionResult:
    schedules = app.admin.via("api").schedules
    schedules.update(name, body.expression, body.job_type, body.payload, actor=who.name, tz=body.tz, missed=body.missed, **body.options)
    return ActionResult(action="update", count=1)


@router.delete("/cron/{name}", response_model=ActionResult, responses={**MUTATION_ERRORS, 404: {"model": Problem}, 409: {"model": Problem}},
               summary="Remove a schedule added at run time")
def remove_schedule(who: Writer, app: App, name: Annotated[Name, Path()]) -> ActionResult:
    app.admin.via("api").schedules.remove(name, actor=who.name)
    return ActionResult(action="remove", count=1)


# -- queues ------------------------------------------------------------------------


@router.get("/queues", response_model=list[QueueOut], summary="Every queue, paused or not, with its jobs by state")
def list_queues(_: Reader, app: App) -> list[QueueOut]:
    return [QueueOut(name=q.name, paused=q.paused, paused_at=q.paused_at, counts=q.counts) for q in app.admin.queues.list()]


@router.post("/queues/{name}/{action}", response_model=ActionResult, responses=MUTATION_ERRORS,
             summary="Pause (workers stop claiming from it; enqueue still works) or resume a queue")
def queue_action(who: Writer, app: App, name: Annotated[Name, Path()], action: Annotated[str, Path(pattern="^(pause|resume)$")]) -> ActionResult:
    queues = app.admin.via("api").queues
    changed = queues.pause(name, actor=who.name) if action == "pause" else queues.resume(name, actor=who.name)
    return ActionResult(action=action, count=int(changed))


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
