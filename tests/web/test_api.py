"""The admin API over real HTTP on both backends: auth, listing, steering, audit, metrics, headers."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from conveyor import JobState, WorkerInfo
from conveyor.testing import running_worker, wait_until
from conveyor.web import create_app
from conveyor.web.auth import SESSION_COOKIE, LoginThrottle
from tests.web.conftest import READ, WRITE, Server, serve

ADMIN_ROUTES = [
    ("GET", "/api/stats"),
    ("GET", "/api/health"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/1"),
    ("POST", "/api/jobs/1/retry"),
    ("POST", "/api/jobs/1/cancel"),
    ("DELETE", "/api/jobs/1"),
    ("POST", "/api/dlq/retry"),
    ("POST", "/api/dlq/purge"),
    ("GET", "/api/workers"),
    ("GET", "/api/audit"),
    ("GET", "/metrics"),
]


def fail_some(server: Server, ok: int = 3, bad: int = 2) -> list[int]:
    app = server.app
    app.enqueue_many([("send_email", {"to": f"u{i}@example.com"}) for i in range(ok)])
    dead = app.enqueue_many([("charge", {"order": f"o{i}", "fail": True}) for i in range(bad)])
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state=[JobState.COMPLETED, JobState.DEAD]) == ok + bad, message="all jobs to finish")
    return dead


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_every_admin_route_needs_a_token_and_changes_nothing(server: Server, method: str, path: str) -> None:
    dead = fail_some(server, ok=0, bad=1)
    for token in (None, "wrong-token-xyz"):
        with server.client(token) as client:
            response = client.request(method, path.replace("/1", f"/{dead[0]}"), json={"all": True})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert server.app.admin.jobs.get(dead[0]).state is JobState.DEAD
    assert server.app.admin.audit.list() == []


def test_read_only_token_reads_but_cannot_steer(server: Server) -> None:
    dead = fail_some(server, ok=1, bad=1)
    with server.client(READ) as client:
        assert client.get("/api/stats").status_code == 200
        refused = client.post(f"/api/jobs/{dead[0]}/retry")
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
    assert server.app.admin.jobs.get(dead[0]).state is JobState.DEAD


def test_list_filter_page_and_detail(server: Server) -> None:
    dead = fail_some(server, ok=3, bad=2)
    with server.client() as client:
        page = client.get("/api/jobs", params={"limit": 2}).json()
        assert len(page["jobs"]) == 2 and page["next_before_id"] == page["jobs"][-1]["id"]
        rest = client.get("/api/jobs", params={"limit": 2, "before_id": page["next_before_id"]}).json()
        assert [j["id"] for j in rest["jobs"]] == sorted({j for j in range(1, 6)} - {j["id"] for j in page["jobs"]}, reverse=True)[:2]
        only_dead = client.get("/api/jobs", params=[("state", "dead"), ("queue", "billing")]).json()["jobs"]
        assert sorted(j["id"] for j in only_dead) == sorted(dead)
        by_type = client.get("/api/jobs", params={"type": "send_email"}).json()["jobs"]
        assert len(by_type) == 3 and {j["state"] for j in by_type} == {"completed"}
        detail = client.get(f"/api/jobs/{dead[0]}").json()
        assert "card declined" in detail["errors"][0]["error"] and detail["errors"][0]["traceback"]
        assert client.get("/api/jobs/999999").status_code == 404
        stats = client.get("/api/stats").json()
        assert stats["total"]["counts"]["dead"] == 2 and stats["total"]["completed"]["15m"] == 3
        assert client.get("/api/dlq").json()["jobs"][0]["state"] == "dead"


def test_invalid_filters_get_422_with_a_clear_message(server: Server) -> None:
    with server.client() as client:
        bad_state = client.get("/api/jobs", params={"state": "exploded"})
        assert bad_state.status_code == 422
        assert "state" in bad_state.text and "pending" in bad_state.text  # names the allowed values
        assert client.get("/api/jobs", params={"limit": 0}).status_code == 422
        assert client.get("/api/jobs", params={"created_after": "yesterday"}).status_code == 422
        naive = client.get("/api/jobs", params={"created_after": "2024-01-01T00:00:00"})
        assert naive.status_code == 422 and "timezone" in naive.text
        assert client.get("/api/jobs", params={"colour": "red"}).status_code == 422
        assert client.post("/api/dlq/retry", json={}).status_code == 422  # no scope: refuse, do not retry everything


def test_retry_cancel_purge_and_the_audit_log(server: Server) -> None:
    app = server.app
    dead = fail_some(server, ok=1, bad=3)
    waiting = app.enqueue("send_email", {"to": "later@example.com"}, delay=3600)
    with server.client() as client:
        assert client.post(f"/api/jobs/{dead[0]}/retry").json() == {"action": "retry", "count": 1}
        assert client.post(f"/api/jobs/{waiting}/retry").status_code == 409
        assert client.post(f"/api/jobs/{waiting}/cancel").status_code == 200
        assert client.delete(f"/api/jobs/{waiting}").json()["count"] == 1
        assert client.post("/api/dlq/purge", json={"ids": [dead[1]]}).json()["count"] == 1
        assert client.post("/api/dlq/retry", json={"filter": {"queue": ["billing"]}}).json()["count"] == 1
    assert app.admin.jobs.get(dead[0]).state in (JobState.PENDING, JobState.RUNNING, JobState.DEAD)
    assert app.admin.jobs.count(ids=[dead[1], waiting]) == 0
    log = app.admin.audit.list()
    assert [(e.actor, e.action) for e in reversed(log)] == [
        ("admin", "job.retry"),
        ("admin", "job.cancel"),
        ("admin", "job.purge"),
        ("admin", "dlq.purge"),
        ("admin", "dlq.retry"),
    ]
    assert log[1].target == f"ids:{dead[1]}" and log[1].detail["count"] == 1


def test_workers_workflows_metrics_and_health(server: Server) -> None:
    app = server.app
    app.enqueue_many([("send_email", {"n": 1}), ("send_email", {"n": 2})], workflow_id="wf-1")
    with running_worker(app) as worker, server.client() as client:
        wait_until(lambda: app.admin.jobs.count(state=JobState.COMPLETED) == 2)
        workers = client.get("/api/workers").json()
        assert [w["worker"]["id"] for w in workers] == [worker.id] and workers[0]["live"] is True
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'conveyor_jobs{queue="email",state="completed",type="send_email"} 2.0' in metrics.text
        assert 'conveyor_workers_live{queue="email"} 1.0' in metrics.text
        assert client.get("/api/health").json()["status"] == "ok"
    with server.client() as client:
        flows = client.get("/api/workflows").json()
        assert flows[0]["workflow_id"] == "wf-1" and flows[0]["states"] == {"completed": 2}
        assert len(client.get("/api/workflows/wf-1").json()["jobs"]) == 2
        assert client.get("/api/workflows/nope").status_code == 404


def test_security_headers_and_openapi(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        for path in ("/login", "/api/stats", "/openapi.json"):
            headers = client.get(path).headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
        spec = client.get("/openapi.json").json()
    assert "/api/jobs" in spec["paths"] and "/api/dlq/purge" in spec["paths"]
    assert not any(p in spec["paths"] for p in ("/", "/login", "/jobs"))  # the dashboard stays out of the API doc


def test_dashboard_login_cookie_and_csrf(server: Server) -> None:
    dead = fail_some(server, ok=0, bad=1)
    with httpx.Client(base_url=server.url) as browser:
        first = browser.get("/dlq")
        assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
        assert browser.post("/login", data={"token": "nope-nope", "next": "/"}).status_code == 401
        login = browser.post("/login", data={"token": WRITE, "next": "/dlq"})
        assert login.status_code == 303 and login.headers["location"] == "/dlq"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and WRITE not in cookie
        page = browser.get("/dlq")
        assert page.status_code == 200 and f"#{dead[0]}" in page.text
        # a form post without the CSRF value is refused and changes nothing
        assert browser.post(f"/jobs/{dead[0]}/retry", data={}).status_code == 403
        # the API through the cookie also wants the CSRF header
        assert browser.post(f"/api/jobs/{dead[0]}/retry").status_code == 403
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        done = browser.post(f"/jobs/{dead[0]}/retry", data={"csrf": csrf, "next": "https://evil.example/"})
        assert done.status_code == 303 and done.headers["location"] == "/"  # never redirected off-site
    assert server.app.admin.jobs.get(dead[0]).state is not JobState.DEAD
    assert [(e.actor, e.action, e.detail.get("via")) for e in server.app.admin.audit.list()] == [
        ("admin", "job.retry", "dashboard"),
        ("admin", "login", "dashboard"),
    ]


def login_cookie(server: Server, token: str = WRITE) -> tuple[httpx.Client, str]:
    browser = httpx.Client(base_url=server.url)
    login = browser.post("/login", data={"token": token, "next": "/"})
    assert login.status_code == 303
    return browser, browser.cookies[SESSION_COOKIE]


def test_logout_ends_the_session_on_the_server(server: Server) -> None:
    """A copy of the cookie taken before logout no longer opens anything after it."""
    browser, cookie = login_cookie(server)
    other, _ = login_cookie(server)
    with httpx.Client(base_url=server.url) as thief:
        thief.cookies.set(SESSION_COOKIE, cookie)
        assert thief.get("/jobs").status_code == 200
        page = browser.get("/")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        out = browser.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        after = thief.get("/jobs")
        assert after.status_code == 303 and after.headers["location"].startswith("/login")
        assert thief.get("/api/stats").status_code == 401
        assert other.get("/jobs").status_code == 200  # another session of the same token is its own
    browser.close()
    other.close()
    assert [e.action for e in server.app.admin.audit.list()][:1] == ["logout"]


def test_repeated_failed_logins_are_refused_for_a_while_and_logged(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="conveyor.web"), httpx.Client(base_url=server.url) as guesser:
        for attempt in range(5):
            assert guesser.post("/login", data={"token": f"guess-{attempt:04d}"}).status_code == 401
        refused = guesser.post("/login", data={"token": WRITE})  # even the right token, while refused
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many failed logins" in refused.text and SESSION_COOKIE not in guesser.cookies
        with httpx.Client(base_url=server.url) as bearer:  # the API's bearer tokens are not affected
            assert bearer.get("/api/stats", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    failures = [r.getMessage() for r in caplog.records if "failed dashboard login" in r.getMessage()]
    assert len(failures) == 5 and "127.0.0.1 (5 in the last 300 s)" in failures[-1]
    assert any("login refused for 127.0.0.1" in r.getMessage() for r in caplog.records)
    throttled = [e for e in server.app.admin.audit.list() if e.action == "login.throttled"]
    assert [(e.actor, e.target, e.detail["failures"]) for e in throttled] == [("anonymous", "client:127.0.0.1", 5)]


def test_login_throttle_window_and_memory_bound() -> None:
    throttle = LoginThrottle(limit=3, window=60.0, addresses=2)
    for second in (0.0, 1.0, 2.0):
        assert throttle.wait("a", now=second) == 0.0
        throttle.failed("a", now=second)
    assert throttle.wait("a", now=10.0) == 50.0
    assert throttle.wait("a", now=60.5) == 0.0  # the first failure left the window
    throttle.failed("b", now=3.0)
    throttle.failed("c", now=4.0)  # a third address: the stalest ("a") is forgotten
    assert throttle.wait("a", now=10.0) == 0.0


def test_mounts_under_a_prefix_in_another_app(server: Server) -> None:
    host = FastAPI()
    host.mount("/ops/conveyor", create_app(server.app))
    with serve(host) as url, httpx.Client(base_url=url) as browser:
        assert browser.get("/ops/conveyor/api/stats", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
        login = browser.post("/ops/conveyor/login", data={"token": READ, "next": "/ops/conveyor/jobs"})
        assert login.headers["location"] == "/ops/conveyor/jobs" and "Path=/ops/conveyor" in login.headers["set-cookie"]
        page = browser.get("/ops/conveyor/jobs")
        assert page.status_code == 200 and 'href="/ops/conveyor/static/conveyor.css"' in page.text
        assert "Retry selected" not in page.text  # read-only: no steering controls


def test_an_empty_selection_selects_nothing_and_all_is_explicit(server: Server) -> None:
    app = server.app
    dead = fail_some(server, ok=2, bad=2)
    waiting = app.enqueue_many([("send_email", {"n": i}) for i in range(3)], delay=3600)
    with server.client() as client:
        for path in ("/api/jobs/cancel", "/api/jobs/retry", "/api/jobs/purge", "/api/dlq/retry", "/api/dlq/purge"):
            for body in ({"ids": []}, {"filter": {}}):
                answer = client.post(path, json=body)
                assert answer.status_code == 200 and answer.json()["count"] == 0, (path, body, answer.text)
        assert app.admin.jobs.count() == 7 and app.admin.dead_letters.count() == 2
        assert app.admin.jobs.count(state="scheduled") == 3
        log = app.admin.audit.list()
        assert len(log) == 10 and {e.detail["count"] for e in log} == {0}
        assert {e.target for e in log} == {"ids:(none)", "filter:(none)"}
        assert client.post("/api/jobs/cancel", json={"all": True}).json()["count"] == 3
        assert client.post("/api/dlq/retry", json={"filter": {"queue": ["billing"]}}).json()["count"] == 2
    entries = app.admin.audit.list(limit=2)
    assert [(e.action, e.target, e.detail["count"], e.detail["via"]) for e in entries] == [
        ("dlq.retry", 'filter:{"queue": ["billing"]}', 2, "api"),
        ("jobs.cancel", "all", 3, "api"),
    ]
    assert {app.admin.jobs.get(i).state for i in waiting} == {JobState.CANCELLED}
    assert {app.admin.jobs.get(i).state for i in dead} <= {JobState.PENDING, JobState.RUNNING, JobState.DEAD}


def test_workers_forget_and_workflow_cancel_retry(server: Server) -> None:
    app = server.app
    app.enqueue_many([("charge", {"order": "w", "fail": True})], workflow_id="wf-fail")
    late = app.enqueue("send_email", {"n": 1}, workflow_id="wf-late", delay=3600)
    with running_worker(app):
        wait_until(lambda: app.admin.dead_letters.count() == 1)
    app.backend.workers_heartbeat(WorkerInfo("w-gone", "host", 1, ("default",), 4))  # a worker that died without saying so
    with server.client() as client:
        assert client.post("/api/workflows/wf-late/cancel").json() == {"action": "cancel", "count": 1}
        assert client.post("/api/workflows/wf-fail/retry").json() == {"action": "retry", "count": 1}
        assert client.post("/api/workers/forget", params={"older_than": 0}).json() == {"action": "forget", "count": 1}
        assert client.post("/api/workflows/wf-late/explode").status_code == 422
    assert app.admin.jobs.get(late).state is JobState.CANCELLED and app.admin.workers.list() == []
    assert [e.action for e in reversed(app.admin.audit.list())] == ["workflow.cancel", "workflow.retry", "workers.forget"]
