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
from conveyor.errors import ConveyorError, InvalidTransition
from conveyor.job import FINISHED_STATES, Job, JobState
from conveyor.stats import Health, Stats, is_live
from conveyor.web.auth import Identity, reader, writer
from conveyor.web.schemas import ActionResult, JobId, JobPage, Limit, Name, PageQuery, Problem, Selection, WorkerOut

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
    jobs = app.list_jobs(limit=query.limit + 1, before_id=query.before_id, **where)
    more = len(jobs) > query.limit
    jobs = jobs[: query.limit]
    return JobPage(jobs=jobs, next_before_id=jobs[-1].id if more else None)


# -- monitoring -----------------------------------------------------------------------


@router.get("/stats", response_model=Stats, summary="Counts, throughput, failure rate, run and wait times, health")
def get_stats(_: Reader, app: App) -> Stats:
    return app.stats()


@router.get("/health", response_model=Health, summary="ok, or degraded with the failing checks")
def get_health(_: Reader, app: App) -> Health:
    return app.health()


# -- jobs ---------------------------------------------------------------------------


@router.get("/jobs", response_model=JobPage, summary="List and filter jobs, newest first")
def list_jobs(_: Reader, app: App, query: Annotated[PageQuery, Query()]) -> JobPage:
    return page(app, query)


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"model": Problem}}, summary="One job with its whole error history")
def get_job(_: Reader, app: App, job_id: PathId) -> Job:
    return app.get_job(job_id)


@router.post("/jobs/{job_id}/retry", response_model=ActionResult, responses=ONE_JOB, summary="Send a dead or cancelled job back to pending")
def retry_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    app.retry(job_id)
    app.audit(who.name, "job.retry", f"job:{job_id}")
    return ActionResult(action="retry", count=1)


@router.post("/jobs/{job_id}/cancel", response_model=ActionResult, responses=ONE_JOB, summary="Cancel a job that has not started")
def cancel_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    app.cancel(job_id)
    app.audit(who.name, "job.cancel", f"job:{job_id}")
    return ActionResult(action="cancel", count=1)


@router.delete("/jobs/{job_id}", response_model=ActionResult, responses=ONE_JOB, summary="Purge one finished job")
def purge_job(who: Writer, app: App, job_id: PathId) -> ActionResult:
    job = app.get_job(job_id)
    if job.state not in FINISHED_STATES:
        raise InvalidTransition(job_id, job.state, "purge")
    count = app.purge(ids=[job_id], state=list(FINISHED_STATES))
    app.audit(who.name, "job.purge", f"job:{job_id}")
    return ActionResult(action="purge", count=count)


@router.post("/jobs/retry", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Retry dead/cancelled jobs by ids or filter")
def retry_jobs(who: Writer, app: App, selection: Selection) -> ActionResult:
    where = selection.where()
    where.setdefault("state", [JobState.DEAD, JobState.CANCELLED])
    count = app.retry_jobs(**where)
    app.audit(who.name, "jobs.retry", scope(selection), count=count)
    return ActionResult(action="retry", count=count)


@router.post("/jobs/cancel", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Cancel unstarted jobs by ids or filter")
def cancel_jobs(who: Writer, app: App, selection: Selection) -> ActionResult:
    count = app.cancel_jobs(**selection.where())
    app.audit(who.name, "jobs.cancel", scope(selection), count=count)
    return ActionResult(action="cancel", count=count)


@router.post("/jobs/purge", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Delete finished jobs by ids or filter")
def purge_jobs(who: Writer, app: App, selection: Selection) -> ActionResult:
    where = selection.where()
    where.setdefault("state", list(FINISHED_STATES))
    count = app.purge(**where)
    app.audit(who.name, "jobs.purge", scope(selection), count=count)
    return ActionResult(action="purge", count=count)


# -- dead-letter queue --------------------------------------------------------------


@router.get("/dlq", response_model=JobPage, summary="The dead-letter queue, newest first")
def list_dead(_: Reader, app: App, query: Annotated[PageQuery, Query()]) -> JobPage:
    return page(app, query, state=JobState.DEAD)


@router.post("/dlq/retry", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Retry dead jobs: ids, filter or all")
def retry_dead(who: Writer, app: App, selection: Selection) -> ActionResult:
    count = app.retry_jobs(**{**selection.where(), "state": JobState.DEAD})
    app.audit(who.name, "dlq.retry", scope(selection), count=count)
    return ActionResult(action="retry", count=count)


@router.post("/dlq/purge", response_model=ActionResult, responses=MUTATION_ERRORS, summary="Delete dead jobs: ids, filter or all")
def purge_dead(who: Writer, app: App, selection: Selection) -> ActionResult:
    count = app.purge(**{**selection.where(), "state": JobState.DEAD})
    app.audit(who.name, "dlq.purge", scope(selection), count=count)
    return ActionResult(action="purge", count=count)


def scope(selection: Selection) -> str:
    if selection.ids is not None:
        return "ids:" + ",".join(str(i) for i in selection.ids[:50]) + ("…" if len(selection.ids) > 50 else "")
    if selection.filter is not None:
        return "filter:" + selection.filter.model_dump_json(exclude_defaults=True)
    return "all"


# -- cron ---------------------------------------------------------------------------


def cron_api(app: Conveyor, method: str) -> Any:
    found = getattr(app, method, None)
    if found is None:
        raise HTTPException(501, "cron schedules are not available in this version of Conveyor")
    return found


def cron_rows(app: Conveyor) -> list[dict[str, Any]]:
    """Schedules as plain dicts, whatever record type the cron module returns."""
    rows = []
    for item in cron_api(app, "cron_list")():
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            rows.append(dataclasses.asdict(item))
        elif isinstance(item, dict):
            rows.append(dict(item))
        else:
            rows.append({k: v for k, v in vars(item).items() if not k.startswith("_")})
    return rows


@router.get("/cron", response_model=list[dict[str, Any]], responses={501: {"model": Problem}}, summary="Cron schedules with next fire times")
def list_cron(_: Reader, app: App) -> list[dict[str, Any]]:
    return cron_rows(app)


@router.post(
    "/cron/{name}/{action}",
    response_model=ActionResult,
    responses={**MUTATION_ERRORS, 404: {"model": Problem}, 501: {"model": Problem}},
    summary="Pause, resume or trigger a schedule now",
)
def cron_action(who: Writer, app: App, name: Annotated[Name, Path()], action: Annotated[str, Path(pattern="^(pause|resume|trigger)$")]) -> ActionResult:
    result = cron_api(app, f"cron_{action}")(name)
    app.audit(who.name, f"cron.{action}", f"cron:{name}", result=result if isinstance(result, int | str | bool) else None)
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
        for w in app.workers()
    ]


@router.get("/workflows", response_model=list[WorkflowSummary], summary="The newest workflows, jobs counted by state")
def list_workflows(_: Reader, app: App, limit: Annotated[Limit, Query()] = 50) -> list[WorkflowSummary]:
    return app.recent_workflows(limit)


@router.get("/workflows/{workflow_id}", response_model=JobPage, responses={404: {"model": Problem}}, summary="A workflow's jobs")
def get_workflow(_: Reader, app: App, workflow_id: Annotated[Name, Path()]) -> JobPage:
    try:
        status = app.workflow(workflow_id)
    except ConveyorError as exc:
        raise HTTPException(404, str(exc)) from exc
    return JobPage(jobs=sorted(status.jobs, key=lambda j: j.id), next_before_id=None)


@router.get("/audit", response_model=list[AuditEntry], summary="Every mutating action: who, what, when")
def list_audit(_: Reader, app: App, limit: Annotated[Limit, Query()] = 100, before_id: Annotated[JobId | None, Query()] = None) -> list[AuditEntry]:
    return app.audit_log(limit, before_id)
