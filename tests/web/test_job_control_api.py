"""Job control through the admin API over real HTTP, on both backends: stop a running job, run now,
wait for a result, pause and resume queues, run-time schedules; every mutation audited."""

from __future__ import annotations

import threading

from conveyor import JobContext, JobState
from conveyor.testing import running_worker, wait_until
from tests.web.conftest import READ, Server


def test_cancel_a_running_job_run_now_and_wait_for_results(server: Server) -> None:
    app = server.app
    started = threading.Event()

    @app.job(queue="reports")
    def report(p: dict, ctx: JobContext) -> dict:  # type: ignore[type-arg]
        if p.get("block"):
            started.set()
            ctx.cancelled.wait(60)
        return {"rows": p.get("rows")}

    blocking = app.enqueue("report", {"block": True})
    delayed = app.enqueue("report", {"rows": 3}, delay=3600)
    with server.client() as http, running_worker(app, lease_seconds=1.5):
        assert started.wait(10)
        assert http.post(f"/api/jobs/{blocking}/cancel").json() == {"action": "cancel", "count": 1}
        wait_until(lambda: app.admin.jobs.get(blocking).state is JobState.CANCELLED)
        pending = http.get(f"/api/jobs/{delayed}/result", params={"timeout": 0.1})
        assert pending.status_code == 408 and "it is scheduled" in pending.json()["detail"]
        assert http.post(f"/api/jobs/{delayed}/run-now").status_code == 200
        done = http.get(f"/api/jobs/{delayed}/result", params={"timeout": 20})
        assert done.status_code == 200 and done.json() == {"job_id": delayed, "state": "completed", "result": {"rows": 3}}
        failed = http.get(f"/api/jobs/{blocking}/result", params={"timeout": 5})
        assert failed.status_code == 409 and "cancelled while running" in failed.json()["detail"]
        again = http.post(f"/api/jobs/{delayed}/run-now")
        assert again.status_code == 409 and "completed" in again.json()["detail"]
        assert http.get("/api/jobs/1/result", params={"timeout": 61}).status_code == 422
    entries = [(e.action, e.target) for e in reversed(app.admin.audit.list())]
    assert entries == [("job.cancel", f"job:{blocking}"), ("job.run_now", f"job:{delayed}")]


def test_pause_and_resume_a_queue(server: Server) -> None:
    app = server.app
    held = app.enqueue("send_email", {})
    with server.client() as http:
        assert http.post("/api/queues/email/pause").json() == {"action": "pause", "count": 1}
        queues = {q["name"]: q for q in http.get("/api/queues").json()}
        assert queues["email"]["paused"] is True and queues["email"]["paused_at"] and queues["email"]["counts"]["pending"] == 1
        assert queues["billing"]["paused"] is False
        assert "email" in http.get("/api/stats").json()["paused"]
        assert 'conveyor_queue_paused{queue="email"} 1.0' in http.get("/metrics").text
        with running_worker(app) as worker:
            wait_until(lambda: "email" in worker.paused)
            assert app.admin.jobs.get(held).state is JobState.PENDING
            assert http.post("/api/queues/email/resume").json() == {"action": "resume", "count": 1}
            wait_until(lambda: app.admin.jobs.get(held).state is JobState.COMPLETED)
        assert http.post("/api/queues/email/resume").json()["count"] == 0
        with server.client(READ) as reader:
            assert reader.post("/api/queues/email/pause").status_code == 403
    assert [e.action for e in reversed(app.admin.audit.list())] == ["queue.pause", "queue.resume", "queue.resume"]


def test_schedules_added_changed_and_removed(server: Server) -> None:
    app = server.app
    body = {"name": "digest", "expression": "0 8 * * *", "job_type": "send_email", "payload": {"n": 1}, "tz": "Europe/Paris",
            "options": {"priority": 5}}
    with server.client() as http:
        assert http.post("/api/cron", json=body).json() == {"action": "add", "count": 1}
        assert http.post("/api/cron", json=body).status_code == 409
        listed = next(s for s in http.get("/api/cron").json() if s["name"] == "digest")
        assert (listed["source"], listed["tz"], listed["options"]) == ("runtime", "Europe/Paris", {"priority": 5})
        changed = http.put("/api/cron/digest", json={"expression": "0 9 * * *", "job_type": "send_email"})
        assert changed.status_code == 200, changed.text
        assert next(s for s in app.admin.schedules.list() if s.name == "digest").expression == "0 9 * * *"
        assert http.put("/api/cron/nothing", json={"expression": "0 9 * * *", "job_type": "send_email"}).status_code == 404
        bad = http.post("/api/cron", json={**body, "name": "bad", "expression": "0 25 * * *"})
        assert bad.status_code == 400 and "25" in bad.json()["detail"]
        unknown = http.post("/api/cron", json={**body, "name": "other", "job_type": "no_such_job"})
        assert unknown.status_code == 400 and "no_such_job" in unknown.json()["detail"]
        assert http.delete("/api/cron/digest").json() == {"action": "remove", "count": 1}
        assert http.delete("/api/cron/digest").status_code == 404
    assert [e.action for e in reversed(app.admin.audit.list())] == ["cron.add", "cron.update", "cron.remove"]
