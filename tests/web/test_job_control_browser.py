"""Job control buttons of the dashboard in real headless Chromium, on both backends: Stop a running
job, Run now, Pause/Resume a queue, add, update and remove a run-time schedule."""

from __future__ import annotations

import threading

from playwright.sync_api import Browser, expect

from conveyor import JobContext, JobState
from conveyor.testing import running_worker, wait_until
from tests.web.conftest import Server
from tests.web.test_browser import backend_of, browser, login, shot

__all__ = ["browser"]  # the module-scoped Chromium fixture


def test_stop_run_now_pause_resume_and_schedules_from_the_dashboard(browser: Browser, server: Server) -> None:
    app, backend = server.app, backend_of(server)
    started = threading.Event()

    @app.job(queue="reports")
    def report(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        if p.get("block"):
            started.set()
            ctx.cancelled.wait(60)

    blocking = app.enqueue("report", {"block": True})
    delayed = app.enqueue("send_email", {"to": "later@example.com"}, delay=3600)
    page = login(browser, server)
    page.on("dialog", lambda dialog: dialog.accept())
    with running_worker(app, lease_seconds=1.5) as worker:
        assert started.wait(10)
        page.goto(f"{server.url}/jobs/{blocking}")
        page.click("button:text-is('Stop')")
        expect(page.locator(".flash")).to_contain_text(f"Job {blocking} cancelled")
        wait_until(lambda: app.admin.jobs.get(blocking).state is JobState.CANCELLED)

        page.goto(f"{server.url}/jobs/{delayed}")
        page.click("button:text-is('Run now')")
        expect(page.locator(".flash")).to_contain_text(f"Job {delayed} due now")
        wait_until(lambda: app.admin.jobs.get(delayed).state is JobState.COMPLETED)

        page.goto(f"{server.url}/")
        page.click("#queues tr:has-text('email') button:text-is('Pause')")
        expect(page.locator(".flash")).to_contain_text("Queue 'email' paused")
        expect(page.locator("#queues tr:has-text('email') .queue-status")).to_have_text("paused")
        wait_until(lambda: "email" in worker.paused)
        held = app.enqueue("send_email", {"to": "held@example.com"})
        shot(page, backend, "queue-paused")
        assert app.admin.jobs.get(held).state is JobState.PENDING
        page.click("#queues tr:has-text('email') button:text-is('Resume')")
        expect(page.locator(".flash")).to_contain_text("Queue 'email' resumed")
        wait_until(lambda: app.admin.jobs.get(held).state is JobState.COMPLETED)

    page.goto(f"{server.url}/cron")
    page.fill("#schedule-form input[name=name]", "weekly-digest")
    page.fill("#schedule-form input[name=expression]", "0 8 * * 1")
    page.fill("#schedule-form input[name=job_type]", "send_email")
    page.fill("#schedule-form input[name=payload]", '{"to": "digest@example.com"}')
    page.click("#schedule-form button:text-is('Add')")
    expect(page.locator(".flash")).to_contain_text("Schedule 'weekly-digest' added")
    expect(page.locator("#cron-list tr:has-text('weekly-digest')")).to_contain_text("run-time")
    page.fill("#schedule-form input[name=name]", "weekly-digest")
    page.fill("#schedule-form input[name=expression]", "0 9 * * 1")
    page.fill("#schedule-form input[name=job_type]", "send_email")
    page.click("#schedule-form button:text-is('Update')")
    expect(page.locator(".flash")).to_contain_text("Schedule 'weekly-digest' updated")
    expect(page.locator("#cron-list tr:has-text('weekly-digest')")).to_contain_text("0 9 * * 1")
    page.fill("#schedule-form input[name=name]", "broken")
    page.fill("#schedule-form input[name=expression]", "0 9 * *")
    page.fill("#schedule-form input[name=job_type]", "send_email")
    page.click("#schedule-form button:text-is('Add')")
    expect(page.locator(".flash")).to_contain_text("invalid cron expression '0 9 * *'")
    shot(page, backend, "cron-runtime")
    page.click("#cron-list tr:has-text('weekly-digest') button:text-is('Remove')")
    expect(page.locator(".flash")).to_contain_text("remove done")
    expect(page.locator("#cron-list")).not_to_contain_text("weekly-digest")
    actions = [e.action for e in reversed(app.admin.audit.list()) if e.action not in ("login", "logout")]  # sign-ins are audited too
    assert actions == ["job.cancel", "job.run_now", "queue.pause", "queue.resume", "cron.add", "cron.update", "cron.remove"]
