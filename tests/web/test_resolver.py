"""Dashboard auth through the host app: a FastAPI shop with its own login mounts the admin app with a resolver; real Chromium, both backends."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from playwright.sync_api import Browser, Page, expect
from starlette.middleware.sessions import SessionMiddleware

from conveyor import Conveyor, JobState
from conveyor.testing import running_worker, wait_until
from conveyor.web import Access, create_app
from tests.web.conftest import WRITE, declare, serve
from tests.web.test_browser import browser  # noqa: F401 (the module's Chromium fixture)

USERS = {"alice": ("wonderland", True), "bob": ("builder", False)}  # name: (password, may act)


def host_app(app: Conveyor) -> FastAPI:
    """The user's own app: its login form and session; Conveyor's admin mounted at /admin, asking it who the caller is."""
    shop = FastAPI()

    @shop.get("/login", response_class=HTMLResponse)
    def login_form(next: str = "/") -> str:
        return (f"<h1>Shop sign-in</h1><form method=post action=/login><input type=hidden name=next value='{html.escape(next)}'>"
                "<input id=user name=user><input id=password name=password type=password><button type=submit>Sign in</button></form>")

    @shop.post("/login")
    def login(request: Request, user: str = Form(), password: str = Form(), next: str = Form("/")) -> Response:
        if USERS.get(user, ("", False))[0] != password:
            return HTMLResponse("<h1>Wrong password</h1>", status_code=401)
        request.session["user"] = user
        return RedirectResponse(next if next.startswith("/admin/") else "/", status_code=303)

    def who(request: Request) -> Access | None:
        user = request.session.get("user")
        return Access(user, write=USERS[user][1]) if user in USERS else None

    shop.mount("/admin", create_app(app, resolver=who, login_url="/login", refresh_seconds=1.0))
    shop.add_middleware(SessionMiddleware, secret_key="the-shop's-own-secret", same_site="strict")
    return shop


@dataclass
class Host:
    app: Conveyor
    url: str


@pytest.fixture
def host(database_url: str) -> Iterator[Host]:
    app = Conveyor(database_url, admin_token=WRITE, poll_interval=0.05, finish_delay=0.002)
    declare(app)
    try:
        with serve(host_app(app)) as url:
            yield Host(app, url)
    finally:
        app.close()


def sign_in(browser: Browser, host: Host, user: str) -> Page:  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{host.url}/admin/dlq")
    expect(page).to_have_url(f"{host.url}/login?next=%2Fadmin%2Fdlq")  # the shop's login, not Conveyor's
    page.fill("#user", user)
    page.fill("#password", USERS[user][0])
    page.click("button[type=submit]")
    expect(page.locator("main h1")).to_have_text("Dead-letter queue")
    expect(page.locator(".who")).to_contain_text(f"Signed in as {user}")
    return page


def test_the_host_apps_login_decides_who_reads_and_who_acts(browser: Browser, host: Host) -> None:  # noqa: F811
    app = host.app
    dead = app.enqueue_many([("charge", {"order": f"o-{i}", "fail": True}) for i in range(2)])
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state=JobState.DEAD) == 2, timeout=60)

    alice = sign_in(browser, host, "alice")
    expect(alice.locator("#dlq-list tbody tr")).to_have_count(2)
    alice.click(f"#dlq-list a:text-is('#{dead[0]}')")
    alice.click("button:text-is('Retry')")
    expect(alice.locator(".flash")).to_contain_text(f"Job {dead[0]} sent back to pending")
    assert app.admin.jobs.get(dead[0]).state is JobState.PENDING
    assert [(e.actor, e.action) for e in app.admin.audit.list()] == [("alice", "job.retry")]  # the host's user is the actor

    bob = sign_in(browser, host, "bob")
    expect(bob.locator(".who")).to_contain_text("(read-only)")
    bob.goto(f"{host.url}/admin/jobs/{dead[1]}")
    expect(bob.locator("main h1")).to_contain_text(f"#{dead[1]}")
    expect(bob.locator("button:text-is('Retry')")).to_have_count(0)
    cookies = {c["name"]: c["value"] for c in bob.context.cookies()}
    with httpx.Client(base_url=host.url, cookies=cookies) as as_bob:
        assert as_bob.get("/admin/api/stats").status_code == 200
        refused = as_bob.post(f"/admin/api/jobs/{dead[1]}/retry")
        assert refused.status_code == 403 and "read-only" in refused.text
    assert app.admin.jobs.get(dead[1]).state is JobState.DEAD

    with httpx.Client(base_url=host.url) as anonymous:
        assert anonymous.get("/admin/api/stats").status_code == 401
        page = anonymous.get("/admin/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fadmin%2F"
        assert anonymous.get("/admin/login?next=/admin/jobs", follow_redirects=False).headers["location"] == "/login?next=%2Fadmin%2Fjobs"
    with httpx.Client(base_url=host.url, headers={"Authorization": f"Bearer {WRITE}"}) as automation:  # tokens still work beside it
        assert automation.post(f"/admin/api/jobs/{dead[1]}/retry").status_code == 200
    assert app.admin.jobs.get(dead[1]).state is JobState.PENDING
