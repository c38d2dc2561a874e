"""The admin web app: JSON API, live dashboard and Prometheus metrics in one ASGI app.

Run it alone (``conveyor dashboard``) or mount it into your own FastAPI/Starlette app:

    >>> from conveyor.web import create_app
    >>> shop.mount("/conveyor", create_app(app))
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from conveyor.app import Conveyor
from conveyor.errors import BackendUnavailable, ConveyorError, InvalidTransition, JobNotFound, ScheduleConflict, ScheduleNotFound
from conveyor.metrics import exposition
from conveyor.web import api, dashboard
from conveyor.web.auth import Access, LoginThrottle, Resolver, Token, Tokens, reader
from conveyor.web.limits import SizeLimit

__all__ = ["Access", "Token", "create_app"]

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def create_app(
    app: Conveyor, *, tokens: Iterable[Token] | None = None, title: str = "Conveyor", refresh_seconds: float = 3.0,
    resolver: Resolver | None = None, login_url: str | None = None, resolver_secret: str | None = None,
) -> FastAPI:
    """An ASGI app to see and steer ``app``'s queue.

    ``tokens`` default to the settings (``admin_token``, ``admin_read_token``, ``admin_tokens``);
    with none configured (and no resolver) every admin route answers 401.

    Mounted in your own app, ``resolver(request) -> Access | None`` decides who the caller is
    from your app's authentication (its session, ``request.user``), and whether they may act;
    dashboard pages send callers it refuses to ``login_url`` (with ``?next=``). Bearer tokens
    still work beside it. ``resolver_secret`` signs the dashboard's CSRF values: give every web
    process the same one (default: random per process).

    >>> shop.mount("/admin", create_app(app, resolver=lambda r: Access(r.user.username, write=r.user.is_staff)
    ...                                 if r.user.is_authenticated else None, login_url="/login"))
    """
    web = FastAPI(
        title=f"{title} admin API",
        version="1",
        description="See and steer a Conveyor job queue. Every route needs `Authorization: Bearer <token>`.",
        docs_url=None,
        redoc_url=None,
    )
    web.state.conveyor = app
    web.state.tokens = Tokens(tokens) if tokens is not None else Tokens.from_settings(app.settings)
    web.state.resolver = resolver
    web.state.login_url = login_url
    web.state.resolver_secret = resolver_secret or secrets.token_hex(32)
    web.state.title = title
    web.state.refresh_seconds = refresh_seconds
    web.state.depth = dashboard.DepthHistory()
    web.state.login_throttle = LoginThrottle()

    @web.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.rstrip("/").endswith(("/api", "/metrics")) or "/api/" in request.url.path:
            response.headers.setdefault("cache-control", "no-store")
        return response

    def problem(status: int) -> Callable[[Request, Exception], Response]:
        def handle(request: Request, exc: Exception) -> Response:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return handle

    web.add_exception_handler(JobNotFound, problem(404))
    web.add_exception_handler(InvalidTransition, problem(409))
    web.add_exception_handler(ScheduleNotFound, problem(404))
    web.add_exception_handler(ScheduleConflict, problem(409))
    web.add_exception_handler(BackendUnavailable, problem(503))
    web.add_exception_handler(ConveyorError, problem(400))
    web.add_exception_handler(dashboard.LoginRequired, dashboard.login_redirect)

    @web.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        reader(request)
        return Response(exposition(app), media_type="text/plain; version=0.0.4; charset=utf-8")

    web.include_router(api.router)
    web.include_router(dashboard.router)
    web.mount("/static", StaticFiles(directory=STATIC), name="static")
    web.add_middleware(SizeLimit)  # 413 for oversized bodies, 431 for oversized headers (conveyor/web/limits.py)
    return web
