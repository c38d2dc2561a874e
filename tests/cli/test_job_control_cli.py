"""Job control through the real ``conveyor`` command, on both backends: cancel (also running), run now,
wait for a result, pause and resume queues, schedules added, changed and removed; every mutation audited."""

from __future__ import annotations

import json
import threading

from conveyor import Conveyor, JobContext, JobState
from conveyor.testing import running_worker, wait_until
from tests.cli.test_cli import APP, run


def test_job_cancel_stops_a_running_job_and_run_now_and_result(app: Conveyor, database_url: str) -> None:
    started = threading.Event()

    @app.job(queue="email")
    def send_email(p: dict, ctx: JobContext) -> dict:  # type: ignore[type-arg]
        if p.get("block"):
            started.set()
            ctx.cancelled.wait(60)
        return {"sent": p.get("n")}

    delayed = app.enqueue("send_email", {"n": 1}, delay=3600)
    blocking = app.enqueue("send_email", {"block": True})
    with running_worker(app, lease_seconds=1.5):
        assert started.wait(10)
        out = run(database_url, "job", "cancel", str(blocking))
        assert out.returncode == 0, out.stderr
        assert f"job {blocking}: cancelled (was running)" in out.stdout
        wait_until(lambda: app.admin.jobs.get(blocking).state is JobState.CANCELLED)
        out = run(database_url, "job", "run-now", str(delayed))
        assert out.returncode == 0 and "due now (was scheduled)" in out.stdout, out.stderr
        result = run(database_url, "job", "result", str(delayed), "--timeout", "20")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"sent": 1}
    failed = run(database_url, "job", "result", str(blocking), "--timeout", "5")
    assert failed.returncode == 1 and "ended cancelled: cancelled while running" in failed.stderr
    again = run(database_url, "job", "run-now", str(delayed))
    assert again.returncode == 1 and "cannot run now" in again.stderr and "completed" in again.stderr
    shown = run(database_url, "job", "show", str(delayed))
    assert json.loads(shown.stdout)["state"] == "completed"
    assert [(e.action, e.target) for e in reversed(app.admin.audit.list())] == [("job.cancel", f"job:{blocking}"), ("job.run_now", f"job:{delayed}")]


def test_queues_pause_list_resume(app: Conveyor, database_url: str) -> None:
    @app.job(queue="email")
    def send_email(p: dict) -> None:  # type: ignore[type-arg]
        return None

    held = app.enqueue("send_email", {})
    out = run(database_url, "queues", "pause", "email")
    assert out.returncode == 0 and "queue email: paused" in out.stdout, out.stderr
    assert "already paused" in run(database_url, "queues", "pause", "email").stdout
    listing = run(database_url, "queues", "list")
    assert listing.returncode == 0 and "email" in listing.stdout and "paused since" in listing.stdout, listing.stderr
    assert "(paused)" in run(database_url, "status").stdout
    with running_worker(app) as worker:
        wait_until(lambda: "email" in worker.paused)
        assert app.admin.jobs.get(held).state is JobState.PENDING
        assert run(database_url, "queues", "resume", "email").returncode == 0
        wait_until(lambda: app.admin.jobs.get(held).state is JobState.COMPLETED)
    assert [e.action for e in reversed(app.admin.audit.list())] == ["queue.pause", "queue.pause", "queue.resume"]


def test_cron_add_update_remove(app: Conveyor, database_url: str) -> None:
    app.admin.jobs.count()  # the database exists (the CLI refuses a missing SQLite file)
    out = run(database_url, "cron", "add", "hourly-digest", "0 * * * *", "send_email", "--payload", '{"n": 1}', "--queue", "email", "--app", APP)
    assert out.returncode == 0 and "hourly-digest: added" in out.stdout, out.stderr
    found = next(s for s in app.admin.schedules.list() if s.name == "hourly-digest")
    assert (found.source, found.expression, found.payload, found.options) == ("runtime", "0 * * * *", {"n": 1}, {"queue": "email"})
    out = run(database_url, "cron", "update", "hourly-digest", "30 * * * *", "send_email", "--app", APP)
    assert out.returncode == 0, out.stderr
    assert next(s for s in app.admin.schedules.list() if s.name == "hourly-digest").expression == "30 * * * *"
    bad = run(database_url, "cron", "add", "broken", "61 * * * *", "send_email", "--app", APP)
    assert bad.returncode == 1 and "61" in bad.stderr
    unknown = run(database_url, "cron", "add", "other", "* * * * *", "no_such_type", "--app", APP)
    assert unknown.returncode == 1 and "no_such_type" in unknown.stderr
    code = run(database_url, "cron", "remove", "nightly-digest", "--app", APP)  # declared in the app's code
    assert code.returncode == 1 and "declared in code" in code.stderr
    assert run(database_url, "cron", "remove", "hourly-digest", "--app", APP).returncode == 0
    assert all(s.name != "hourly-digest" for s in app.admin.schedules.list())
    assert [e.action for e in reversed(app.admin.audit.list())] == ["cron.add", "cron.update", "cron.remove"]
