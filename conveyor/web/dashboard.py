"""The dashboard: server-rendered pages over the same Conveyor methods as the API.

Pages refresh themselves: ``static/conveyor.js`` re-fetches the page every few seconds and
swaps each ``data-live`` region, so there is no client-side state to drift and no build step.
Mutations are plain HTML forms (POST, CSRF field, redirect back), recorded in the audit log.
"""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.datastructures import FormData

from conveyor.admin import Selection
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError, JobNotFound
from conveyor.formatting import ago, duration, number, percent
from conveyor.job import FINISHED_STATES, Job, JobState
from conveyor.stats import Stats, is_live
from conveyor.web.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Identity,
    LoginThrottle,
    Role,
    Tokens,
    authenticate,
    csrf_value,
    log,
)
from conveyor.web.schemas import PageQuery
from conveyor.workflow import WorkflowNode

FLASH_COOKIE = "conveyor_flash"
STATE_ORDER = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.SCHEDULED,
    JobState.WAITING,
    JobState.COMPLETED,
    JobState.DEAD,
    JobState.CANCELLED,
    JobState.EXPIRED,
)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


# -- shared state: a short stats cache and the queue-depth history --------------------


class DepthHistory:
    """Queue depth sampled whenever stats are read (at most every 2 s), for the depth chart."""

    def __init__(self, capacity: int = 450, every: float = 2.0) -> None:
        self.points: deque[tuple[float, int, int, int]] = deque(maxlen=capacity)
        self.every = every
        self._lock = threading.Lock()
        self._stats: tuple[float, Stats] | None = None

    def stats(self, app: Conveyor, max_age: float = 1.0) -> Stats:
        """Stats at most ``max_age`` seconds old, shared by every viewer of this process."""
        with self._lock:
            cached = self._stats
            if cached is not None and time.monotonic() - cached[0] < max_age:
                return cached[1]
        stats = app.admin.stats()
        with self._lock:
            self._stats = (time.monotonic(), stats)
            at = stats.at.timestamp()
            if not self.points or at - self.points[-1][0] >= self.every:
                c = stats.total.counts
                self.points.append((at, c["pending"], c["running"], c["scheduled"]))
        return stats

    def series(self) -> list[list[float]]:
        with self._lock:
            return [list(p) for p in self.points]

    def forget(self) -> None:
        """Drop the cached stats (after an action that changes what they show)."""
        with self._lock:
            self._stats = None


# -- formatting -----------------------------------------------------------------------


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


templates.env.filters.update(duration=duration, number=number, percent=percent, pretty=pretty)
templates.env.globals.update(ago=ago, STATE_ORDER=STATE_ORDER, FINISHED_STATES=FINISHED_STATES)


# -- request plumbing -----------------------------------------------------------------


def base_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(request: Request, template: str, identity: Identity | None, status_code: int = 200, **values: Any) -> Response:
    app: Conveyor = request.app.state.conveyor
    context: dict[str, Any] = {
        "base": base_path(request),
        "title": request.app.state.title,
        "identity": identity,
        "can_write": identity is not None and identity.token.allows(Role.WRITE),
        "csrf": csrf_value(identity) if identity is not None else "",
        "csrf_field": CSRF_FIELD,
        "refresh_ms": int(request.app.state.refresh_seconds * 1000),
        "flash": request.cookies.get(FLASH_COOKIE, "")[:300],
        "path": request.url.path,
        "page": template.removesuffix(".html"),
        **values,
    }
    if identity is not None and "stats" not in context:
        context["stats"] = request.app.state.depth.stats(app)
    if identity is not None:
        context.setdefault("now", context["stats"].at)
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=base_path(request) or "/")
    return response


class LoginRequired(Exception):
    """A dashboard page was asked for without a valid session or token: send to the login page."""


def viewer(request: Request) -> Identity:
    """The signed-in caller of a page (a FastAPI dependency); otherwise LoginRequired."""
    identity = authenticate(request)
    if identity is None:
        raise LoginRequired()
    return identity


Viewer = Annotated[Identity, Depends(viewer)]


def login_redirect(request: Request, _: Exception | None = None) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.app.state.resolver is not None:  # the host app signs people in
        return host_login(request, target)
    return RedirectResponse(f"{base_path(request)}/login?{urlencode({'next': target})}", status_code=303)


def host_login(request: Request, target: str) -> Response:
    login_url: str | None = request.app.state.login_url
    if login_url is None:
        return Response("Sign in to the application first.", status_code=401, media_type="text/plain")
    return RedirectResponse(f"{login_url}{'&' if '?' in login_url else '?'}{urlencode({'next': target})}", status_code=303)


def safe_next(request: Request, value: str | None) -> str:
    """Only redirect to a path inside this app (never another host)."""
    base = base_path(request)
    if value and value.startswith(base + "/") and not value.startswith("//") and "\\" not in value and "\n" not in value:
        return value
    return base + "/"


def back(request: Request, target: str | None, message: str) -> Response:
    response = RedirectResponse(safe_next(request, target), status_code=303)
    response.set_cookie(FLASH_COOKIE, message[:300], max_age=30, httponly=True, samesite="strict", path=base_path(request) or "/")
    return response


async def mutation(request: Request) -> tuple[Identity, dict[str, Any]] | Response:
    """The caller and its form, if it may write and the CSRF value matches."""
    checked = await signed_form(request)
    if isinstance(checked, Response):
        return checked
    identity, form = checked
    values: dict[str, Any] = {k: form.getlist(k) if k in ("ids", "state", "queue", "type") else form.get(k) for k in form}
    if not identity.token.allows(Role.WRITE):
        return back(request, values.get("next"), f"Token {identity.name!r} is read-only.")
    return identity, values


async def signed_form(request: Request) -> tuple[Identity, FormData] | Response:
    """The signed-in caller and its posted form, if the form carries this session's CSRF value."""
    identity = authenticate(request)
    if identity is None:
        return login_redirect(request)
    form = await request.form()
    if identity.session is None or not hmac.compare_digest(str(form.get(CSRF_FIELD) or ""), csrf_value(identity)):
        return Response("CSRF check failed: reload the page and try again.", status_code=403, media_type="text/plain")
    return identity, form


# -- login ----------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if request.app.state.resolver is not None:
        return host_login(request, safe_next(request, next))
    return render(request, "login.html", None, next=safe_next(request, next), error="")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    tokens: Tokens = request.app.state.tokens
    throttle: LoginThrottle = request.app.state.login_throttle
    client = request.client.host if request.client else "unknown"
    target = safe_next(request, str(form.get("next") or ""))
    wait = throttle.wait(client)
    if wait > 0:
        log.warning("dashboard login refused for %s: too many failed logins, %.0f s to wait", client, wait)
        response = render(request, "login.html", None, status_code=429, next=target,
                          error=f"Too many failed logins from your address. Try again in {math.ceil(wait)} s.")
        response.headers["retry-after"] = str(math.ceil(wait))
        return response
    token = tokens.match(str(form.get("token") or ""))
    app: Conveyor = request.app.state.conveyor
    if token is None:
        failures = throttle.failed(client)
        log.warning("failed dashboard login from %s (%d in the last %.0f s)", client, failures, throttle.window)
        if failures == throttle.limit:  # once per lock-out, so a guesser cannot fill the audit log
            app.admin.via("dashboard").audit.record("anonymous", "login.throttled", f"client:{client}", failures=failures,
                                                    window=throttle.window)
        return render(request, "login.html", None, status_code=401, next=target, error="That token is not valid.")
    throttle.succeeded(client)
    cookie, session_id = tokens.session_for(token)
    app.insights.sessions_open(session_id, token.name, SESSION_SECONDS)
    app.admin.via("dashboard").audit.record(token.name, "login", f"client:{client}")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=base_path(request) or "/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session on the server (its row goes), then in the browser: a copied cookie stops working too."""
    checked = await signed_form(request)
    if isinstance(checked, Response):
        return checked
    identity, _ = checked
    if identity.session_id is not None:
        request.app.state.conveyor.insights.sessions_close(identity.session_id)
        request.app.state.conveyor.admin.via("dashboard").audit.record(identity.name, "logout")
    response = RedirectResponse(f"{base_path(request)}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=base_path(request) or "/")
    return response


# -- pages ----------------------------------------------------------------------------


@router.get("/")
def overview(request: Request, identity: Viewer) -> Response:
    stats: Stats = request.app.state.depth.stats(request.app.state.conveyor)
    chart = {
        "bucket": stats.bucket_seconds,
        "throughput": [[p.at.timestamp(), p.completed, p.dead] for p in stats.series],
        "depth": request.app.state.depth.series(),
    }
    return render(request, "overview.html", identity, stats=stats, chart=json.dumps(chart))


def job_query(params: dict[str, list[str]]) -> tuple[PageQuery, str]:
    """The jobs page's filters; invalid ones are dropped with a message instead of a 422 page."""
    data: dict[str, Any] = {k: v for k, v in params.items() if k in ("state", "queue", "type") and v}
    for key in ("workflow_id", "before_id", "created_after", "created_before", "limit"):
        if params.get(key) and params[key][0]:
            data[key] = params[key][0]
    for key in ("queue", "type", "state"):
        if key in data:
            data[key] = [v for v in data[key] if v]
    try:
        return PageQuery.model_validate(data), ""
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return PageQuery(), f"Ignored invalid filters ({problems})."


def query_params(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        out.setdefault(key, []).append(value)
    return out


def jobs_listing(request: Request, identity: Identity, template: str, forced_state: JobState | None) -> Response:
    app: Conveyor = request.app.state.conveyor
    query, problem = job_query(query_params(request))
    where = query.where()
    if forced_state is not None:
        where["state"] = forced_state
    jobs = app.admin.jobs.list(limit=query.limit + 1, before_id=query.before_id, **where)
    more = len(jobs) > query.limit
    jobs = jobs[: query.limit]
    stats: Stats = request.app.state.depth.stats(app)
    tab_counts = {s.value: 0 for s in JobState}
    for group in stats.types:
        if (not query.queue or group.queue in query.queue) and (not query.type or group.type in query.type):
            for state, n in group.counts.items():
                tab_counts[state] += n
    keep = {k: v for k, v in query_params(request).items() if k in ("queue", "type", "workflow_id", "created_after", "created_before")}
    return render(
        request,
        template,
        identity,
        stats=stats,
        jobs=jobs,
        matching=app.admin.jobs.count(**where) if forced_state is JobState.DEAD else None,  # shown before "all matching" acts
        query=query,
        problem=problem,
        tab_counts=tab_counts,
        queues=sorted({g.queue for g in stats.types if g.queue}),
        types=sorted({g.type for g in stats.types if g.type}),
        next_url=f"{request.url.path}?{urlencode({**keep, 'state': [s.value for s in query.state], 'before_id': jobs[-1].id}, doseq=True)}"
        if more
        else None,
        filter_qs=urlencode(keep, doseq=True),
    )


@router.get("/jobs")
def jobs_page(request: Request, identity: Viewer) -> Response:
    return jobs_listing(request, identity, "jobs.html", None)


@router.get("/dlq")
def dlq_page(request: Request, identity: Viewer) -> Response:
    return jobs_listing(request, identity, "dlq.html", JobState.DEAD)


@router.get("/jobs/{job_id}")
def job_page(request: Request, identity: Viewer, job_id: str) -> Response:
    app: Conveyor = request.app.state.conveyor
    try:
        job: Job | None = app.admin.jobs.get(int(job_id)) if job_id.isdigit() and int(job_id) < 2**63 else None
    except JobNotFound:
        job = None
    if job is None:
        return render(request, "missing.html", identity, status_code=404, what=f"job {job_id}")
    return render(request, "job.html", identity, job=job)


@router.get("/cron")
def cron_page(request: Request, identity: Viewer) -> Response:
    app: Conveyor = request.app.state.conveyor
    return render(request, "cron.html", identity, schedules=app.admin.schedules.list(), available=True)


@router.get("/workflows")
def workflows_page(request: Request, identity: Viewer) -> Response:
    return render(request, "workflows.html", identity, workflows=request.app.state.conveyor.admin.workflows.list(50))


@router.get("/workflows/{workflow_id}")
def workflow_page(request: Request, identity: Viewer, workflow_id: str) -> Response:
    app: Conveyor = request.app.state.conveyor
    name = workflow_id[:200].replace("\x00", "")
    try:
        status = app.admin.workflows.status(name)
    except ConveyorError:
        return render(request, "missing.html", identity, status_code=404, what=f"workflow {workflow_id}")
    return render(request, "workflow.html", identity, workflow_id=name, status=status, tree=flatten(status.tree()), jobs=status.jobs)


def flatten(nodes: Sequence[WorkflowNode], depth: int = 0) -> list[tuple[int, WorkflowNode]]:
    """(depth, node) in tree order, for an indented list."""
    out: list[tuple[int, WorkflowNode]] = []
    for node in nodes:
        out.append((depth, node))
        out += flatten(node.children, depth + 1)
    return out


@router.get("/workers")
def workers_page(request: Request, identity: Viewer) -> Response:
    app: Conveyor = request.app.state.conveyor
    stats: Stats = request.app.state.depth.stats(app)
    workers = [(w, is_live(w, stats.at, app.settings.worker_stale_after)) for w in app.admin.workers.list()]
    return render(request, "workers.html", identity, stats=stats, workers=workers)


@router.get("/audit")
def audit_page(request: Request, identity: Viewer) -> Response:
    return render(request, "audit.html", identity, entries=request.app.state.conveyor.admin.audit.list(200))


# -- actions --------------------------------------------------------------------------


@router.post("/jobs/{job_id}/{action}")
async def job_action(request: Request, job_id: int, action: str) -> Response:
    checked = await mutation(request)
    if isinstance(checked, Response):
        return checked
    identity, form = checked
    jobs = request.app.state.conveyor.admin.via("dashboard").jobs
    act = {"retry": jobs.retry, "cancel": jobs.cancel, "purge": jobs.purge, "run-now": jobs.run_now}.get(action)
    if act is None:
        return Response("unknown action", status_code=404, media_type="text/plain")
    target = form.get("next") or f"{base_path(request)}/jobs/{job_id}"
    try:
        act(job_id, actor=identity.name)
    except ConveyorError as exc:
        return back(request, target, str(exc))
    if action == "purge":
        target = form.get("next") or f"{base_path(request)}/jobs"
    verb = {"retry": "sent back to pending", "cancel": "cancelled", "purge": "purged", "run-now": "due now"}[action]
    return back(request, target, f"Job {job_id} {verb}.")


@router.post("/bulk")
async def bulk_action(request: Request) -> Response:
    """Retry, cancel or purge the checked jobs, or (DLQ) every dead job matching the filter."""
    checked = await mutation(request)
    if isinstance(checked, Response):
        return checked
    identity, form = checked
    admin = request.app.state.conveyor.admin.via("dashboard")
    action, _, matching = str(form.get("action") or "").partition("-")
    dead_only = form.get("scope") == "dead-selected"
    if dead_only and matching == "matching":
        query, _ = job_query({k: v if isinstance(v, list) else [v] for k, v in form.items() if v})
        where = query.where()
        selection = Selection.matching(**where) if where else Selection.every()  # no filter on the page: every dead job, as the button says
    else:
        ids = [int(i) for i in form.get("ids") or [] if str(i).isdigit() and int(i) < 2**63]
        if not ids:
            return back(request, form.get("next"), "Select some jobs first.")
        selection = Selection.of(ids)
    part = admin.dead_letters if dead_only else admin.jobs
    act = {"retry": part.retry, "purge": part.purge, **({} if dead_only else {"cancel": admin.jobs.cancel})}.get(action)
    if act is None:
        return back(request, form.get("next"), "Unknown action.")
    count = act(selection, actor=identity.name)
    past = {"retry": "retried", "cancel": "cancelled", "purge": "purged"}[action]
    return back(request, form.get("next"), f"{count} job{'s' if count != 1 else ''} {past}.")


@router.post("/cron/{name}/{action}")
async def cron_action(request: Request, name: str, action: str) -> Response:
    checked = await mutation(request)
    if isinstance(checked, Response):
        return checked
    identity, form = checked
    schedules = request.app.state.conveyor.admin.via("dashboard").schedules
    act = {"pause": schedules.pause, "resume": schedules.resume, "trigger": schedules.trigger, "remove": schedules.remove}.get(action)
    if act is None:
        return back(request, form.get("next"), "That cron action is not available.")
    try:
        act(name, actor=identity.name)
    except ConveyorError as exc:
        return back(request, form.get("next"), str(exc))
    return back(request, form.get("next"), f"Schedule {name!r}: {action} done.")


@router.post("/cron-put")
async def cron_put(request: Request) -> Response:
    """Add (``mode=add``) or change (``mode=update``) a run-time schedule from the cron page's form."""
    checked = await mutation(request)
    if isinstance(checked, Response):
        return checked
    identity, form = checked
    schedules = request.app.state.conveyor.admin.via("dashboard").schedules
    target = f"{base_path(request)}/cron"
    name, adding = str(form.get("name") or ""), form.get("mode") == "add"
    try:
        payload = json.loads(str(form.get("payload") or "null"))
    except ValueError as exc:
        return back(request, target, f"The payload is not JSON: {exc}")
    try:
        (schedules.add if adding else schedules.update)(
            name, str(form.get("expression") or ""), str(form.get("job_type") or ""), payload, actor=identity.name,
            tz=str(form.get("tz") or "") or None,
        )
    except ConveyorError as exc:
        return back(request, target, str(exc))
    return back(request, target, f"Schedule {name!r} {'added' if adding else 'updated'}.")


@router.post("/queues/{name}/{action}")
async def queue_action(request: Request, name: str, action: str) -> Response:
    """Pause or resume a queue from the overview."""
    checked = await mutation(request)
    if isinstance(checked, Response):
        return checked
    identity, form = checked
    queues = request.app.state.conveyor.admin.via("dashboard").queues
    act = {"pause": queues.pause, "resume": queues.resume}.get(action)
    if act is None:
        return Response("unknown action", status_code=404, media_type="text/plain")
    try:
        act(name, actor=identity.name)
    except ConveyorError as exc:
        return back(request, form.get("next"), str(exc))
    request.app.state.depth.forget()
    return back(request, form.get("next"), f"Queue {name!r} {'paused' if action == 'pause' else 'resumed'}.")
