"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium driven by playwright)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conveyor import JobNotFound, JobState
from conveyor.testing import running_worker, wait_until
from tests.conftest import missing
from tests.web.conftest import WRITE, Server

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("CONVEYOR_TEST_OUTPUT", "test-output")) / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        missing(CHROMIUM, "`make test` installs Debian's chromium package")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def login(browser: Browser, server: Server) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 960})
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/login?next=%2F")
    page.fill("#token", WRITE)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")
    return page


def shot(page: Page, backend: str, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{backend}-{name}.png"), full_page=True)


def backend_of(server: Server) -> str:
    return "sqlite" if server.app.settings.database_url.startswith("sqlite") else "postgres"


def test_counters_go_live_and_a_dead_job_is_retried(browser: Browser, server: Server) -> None:
    app, backend = server.app, backend_of(server)
    app.enqueue_many([("send_email", {"to": f"u{i}@example.com"}) for i in range(4)], workflow_id="wf-demo")
    dead = app.enqueue_many([("charge", {"order": f"o-{i}", "fail": True}) for i in range(2)])
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state=[JobState.COMPLETED, JobState.DEAD]) == 6)

    page = login(browser, server)
    completed = page.locator('[data-counter="completed"]')
    expect(completed).to_have_text("4")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    app.enqueue_many([("send_email", {"to": f"more{i}@example.com"}) for i in range(5)])
    expect(page.locator('[data-counter="pending"]')).to_have_text("5", timeout=10_000)
    with running_worker(app):
        expect(completed).to_have_text("9", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_timeout(1200)  # one more refresh so the depth chart has several samples
    shot(page, backend, "overview")

    page.click("nav >> text=Dead letters")
    expect(page.locator("h1")).to_have_text("Dead-letter queue")
    expect(page.locator("#dlq-list tbody tr")).to_have_count(2)
    shot(page, backend, "dlq")
    page.click(f"#dlq-list a:text-is('#{dead[0]}')")
    expect(page.locator("h1")).to_contain_text(f"#{dead[0]}")
    expect(page.locator(".timeline")).to_contain_text("card declined for order o-0")
    shot(page, backend, "job")
    page.click("button:text-is('Retry')")
    expect(page.locator(".flash")).to_contain_text(f"Job {dead[0]} sent back to pending")
    page.goto(f"{server.url}/dlq")
    expect(page.locator("#dlq-list tbody tr")).to_have_count(1)
    expect(page.locator(f"#dlq-list a:text-is('#{dead[0]}')")).to_have_count(0)
    assert app.admin.jobs.get(dead[0]).state is JobState.PENDING

    app.cron("*/5 * * * *", "send_email", {"to": "digest@example.com"}, name="digest")
    app.cron("0 3 * * *", "charge", {"order": "nightly"}, name="nightly-charge")
    app.cron_sync()
    app.admin.schedules.pause("nightly-charge", actor="test")
    for name, path in (("jobs", "/jobs"), ("workers", "/workers"), ("workflows", "/workflows"), ("workflow", "/workflows/wf-demo"),
                       ("cron", "/cron"), ("audit", "/audit")):
        page.goto(f"{server.url}{path}")
        expect(page.locator("main h1")).to_be_visible()
        shot(page, backend, name)
    expect(page.locator("#audit-list")).to_contain_text("job.retry")
    page.goto(f"{server.url}/cron")
    expect(page.locator("#cron-list")).to_contain_text("digest")
    page.click("#cron-list tr:has-text('nightly-charge') button:text-is('Resume')")
    expect(page.locator(".flash")).to_contain_text("resume done")
    assert not next(s for s in app.admin.schedules.list() if s.name == "nightly-charge").paused
    page.goto(f"{server.url}/login")
    shot(page, backend, "login")


def test_bulk_retry_from_the_dead_letter_queue(browser: Browser, server: Server) -> None:
    app = server.app
    dead = app.enqueue_many([("charge", {"order": f"b-{i}", "fail": True}) for i in range(3)])
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state=JobState.DEAD) == 3)
    page = login(browser, server)
    page.goto(f"{server.url}/dlq")
    page.check(f"#sel-{dead[0]}")
    page.check(f"#sel-{dead[2]}")
    expect(page.locator("[data-selected-count]")).to_have_text("2 selected")
    page.wait_for_timeout(1500)  # a live refresh must keep the selection
    expect(page.locator(f"#sel-{dead[2]}")).to_be_checked()
    page.click("button:text-is('Retry selected')")
    expect(page.locator(".flash")).to_contain_text("2 jobs retried")
    expect(page.locator("#dlq-list tbody tr")).to_have_count(1)
    assert app.admin.jobs.get(dead[1]).state is JobState.DEAD


def test_every_dashboard_button_acts_through_the_admin_and_is_audited(browser: Browser, server: Server) -> None:
    app = server.app
    dead = app.enqueue_many([("charge", {"order": f"c-{i}", "fail": True}) for i in range(4)])
    with running_worker(app):
        wait_until(lambda: app.admin.dead_letters.count() == 4)
    later = app.enqueue_many([("send_email", {"to": f"later{i}@example.com"}) for i in range(3)], delay=3600)
    app.cron("0 3 * * *", "send_email", {"to": "digest@example.com"}, name="digest")
    app.cron_sync()
    page = login(browser, server)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))

    page.goto(f"{server.url}/jobs/{later[0]}")  # one job: cancel, then purge
    page.click("button:text-is('Cancel')")
    expect(page.locator(".flash")).to_contain_text(f"Job {later[0]} cancelled")
    page.click("button:text-is('Purge')")
    expect(page.locator(".flash")).to_contain_text(f"Job {later[0]} purged")
    page.goto(f"{server.url}/jobs?state=scheduled")  # bulk cancel from the jobs list
    page.check(f"#sel-{later[1]}")
    page.click("button:text-is('Cancel selected')")
    expect(page.locator(".flash")).to_contain_text("1 job cancelled")

    page.goto(f"{server.url}/dlq")
    page.check(f"#sel-{dead[0]}")
    page.click("button:text-is('Purge selected')")
    expect(page.locator(".flash")).to_contain_text("1 job purged")
    page.goto(f"{server.url}/dlq?queue=billing")
    page.click("button:has-text('Retry all 3 matching')")  # the count is shown before acting on everything matching
    expect(page.locator(".flash")).to_contain_text("3 jobs retried")
    assert "Retry all 3 dead jobs matching this filter?" in dialogs

    page.goto(f"{server.url}/cron")
    page.click("#cron-list tr:has-text('digest') button:text-is('Pause')")
    expect(page.locator(".flash")).to_contain_text("pause done")
    page.click("#cron-list tr:has-text('digest') button:text-is('Run now')")
    expect(page.locator(".flash")).to_contain_text("trigger done")

    with pytest.raises(JobNotFound):
        app.admin.jobs.get(later[0])
    assert app.admin.jobs.get(later[1]).state is JobState.CANCELLED and app.admin.jobs.get(later[2]).state is JobState.SCHEDULED
    assert app.admin.dead_letters.count() == 0 and app.admin.schedules.get("digest").paused
    log = [(e.action, e.target, e.detail.get("count"), e.detail.get("via")) for e in reversed(app.admin.audit.list())
           if e.action not in ("login", "logout")]  # sign-ins are audited too; this test is about the buttons
    assert log == [
        ("job.cancel", f"job:{later[0]}", None, "dashboard"),
        ("job.purge", f"job:{later[0]}", None, "dashboard"),
        ("jobs.cancel", f"ids:{later[1]}", 1, "dashboard"),
        ("dlq.purge", f"ids:{dead[0]}", 1, "dashboard"),
        ("dlq.retry", 'filter:{"queue": ["billing"]}', 3, "dashboard"),
        ("cron.pause", "cron:digest", None, "dashboard"),
        ("cron.trigger", "cron:digest", None, "dashboard"),
    ]
