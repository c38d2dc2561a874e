"""Cron schedules in the store: sync, list, pause/resume/trigger, missed fires, exactly-once fire — both backends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Conveyor, DeclarationError, JobState
from conveyor.backends.base import FireParams
from conveyor.cron import Cron, Missed, fire_key, plan_fires
from conveyor.errors import ScheduleNotFound
from conveyor.worker.scheduler import tick


def declare(app: Conveyor) -> None:
    @app.job(queue="reports")
    def daily_report(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job()
    def ping(p: dict) -> None:  # type: ignore[type-arg]
        return None


def test_sync_creates_rows_keeps_their_timetable_and_disables_undeclared_ones(app: Conveyor) -> None:
    declare(app)
    app.cron("0 0 * * *", "daily_report", {"kind": "sales"}, tz="Europe/Berlin", priority=5)
    app.cron("*/5 * * * *", "ping", name="pinger")
    app.cron_sync()
    rows = {s.name: s for s in app.admin.schedules.list()}
    assert set(rows) == {"daily_report", "pinger"}
    report = rows["daily_report"]
    assert report.tz == "Europe/Berlin" and report.payload == {"kind": "sales"} and report.options == {"priority": 5}
    assert report.active and report.next_fire_at > app.now()
    assert report.next_fire_at == Cron("0 0 * * *", "Europe/Berlin").next_after(app.now())

    app.backend.schedule_set("pinger", paused=False, next_fire_at=report.next_fire_at - timedelta(days=1))
    app.cron_sync()  # unchanged declaration: the stored next fire stands (missed fires stay visible)
    assert {s.name: s for s in app.admin.schedules.list()}["pinger"].next_fire_at == report.next_fire_at - timedelta(days=1)

    later = Conveyor(app.settings.database_url)
    declare(later)
    later.cron("0 12 * * *", "daily_report", {"kind": "sales"})  # changed expression and zone; pinger removed
    later.cron_sync()
    rows = {s.name: s for s in later.backend.schedules_list()}
    assert rows["daily_report"].next_fire_at == Cron("0 12 * * *").next_after(later.now())
    assert rows["daily_report"].enabled and not rows["pinger"].enabled
    later.close()


def test_pause_resume_and_trigger(app: Conveyor) -> None:
    declare(app)
    app.cron("0 0 1 1 *", "daily_report", {"kind": "yearly"}, name="yearly", queue="urgent")
    app.admin.schedules.pause("yearly", actor="test")
    assert app.admin.schedules.get("yearly").paused
    job_id = app.admin.schedules.trigger("yearly", actor="test")
    job = app.admin.jobs.get(job_id)
    assert (job.type, job.queue, job.payload) == ("daily_report", "urgent", {"kind": "yearly"})
    app.admin.schedules.resume("yearly", actor="test")
    assert app.admin.schedules.get("yearly").active
    with pytest.raises(ScheduleNotFound):
        app.admin.schedules.pause("nope", actor="test")


def test_declarations_are_checked(app: Conveyor) -> None:
    declare(app)
    with pytest.raises(DeclarationError, match="cron expression"):
        app.cron("61 * * * *", "ping")
    with pytest.raises(DeclarationError, match="timezone"):
        app.cron("* * * * *", "ping", tz="Mars/Olympus")
    with pytest.raises(DeclarationError, match="missed"):
        app.cron("* * * * *", "ping", missed="sometimes")
    with pytest.raises(DeclarationError, match="unknown option"):
        app.cron("* * * * *", "ping", delay=5)
    app.cron("* * * * *", "ping")
    with pytest.raises(DeclarationError, match="twice"):
        app.cron("*/2 * * * *", "ping")


def test_a_due_fire_is_enqueued_once_however_many_workers_race(app: Conveyor) -> None:
    declare(app)
    app.cron("* * * * *", "ping")
    app.cron_sync()
    due = app.now().replace(microsecond=0) - timedelta(seconds=1)
    app.backend.schedule_set("ping", paused=False, next_fire_at=due)
    following = due + timedelta(minutes=1)
    barrier = threading.Barrier(8)
    won: list[list[int]] = []

    def racer() -> None:
        job = app.new_job("ping", {}, {"idempotency_key": fire_key("ping", due)})
        barrier.wait()
        ids = app.backend.schedule_fire(FireParams("ping", due, following, (job,), due))
        if ids is not None:
            won.append(ids)

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(won[0]) == 1
    assert app.admin.jobs.count(type="ping") == 1
    row = app.admin.schedules.get("ping")
    assert row.next_fire_at == following and row.last_fire_at == due and row.last_job_id == won[0][0]


@pytest.mark.parametrize(("missed", "expected"), [("skip", 0), ("run_once", 1)])
def test_fires_missed_while_no_worker_ran(app: Conveyor, missed: str, expected: int) -> None:
    declare(app)
    app.cron("0 * * * *", "ping", missed=missed)
    app.cron_sync()
    now = app.now()
    app.backend.schedule_set("ping", paused=False, next_fire_at=Cron("0 * * * *").next_after(now - timedelta(hours=5)))
    tick(app)
    assert app.admin.jobs.count(type="ping") == expected
    assert app.admin.schedules.get("ping").next_fire_at == Cron("0 * * * *").next_after(now)
    tick(app)
    assert app.admin.jobs.count(type="ping") == expected  # nothing more until the next hour


def test_paused_and_disabled_schedules_do_not_fire(app: Conveyor) -> None:
    declare(app)
    app.cron("* * * * * *", "ping")
    app.cron_sync()
    app.admin.schedules.pause("ping", actor="test")
    app.backend.schedule_set("ping", paused=True, next_fire_at=app.now() - timedelta(seconds=1))
    tick(app)
    assert app.admin.jobs.count(type="ping") == 0
    app.registry.schedules.clear()
    app.cron_sync()
    app.backend.schedule_set("ping", paused=False, next_fire_at=app.now() - timedelta(seconds=1))
    tick(app)
    assert app.admin.jobs.count(type="ping") == 0


def test_late_fires_within_the_grace_all_run() -> None:
    every_second = Cron("* * * * * *")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    fires, following = plan_fires(every_second, start, start + timedelta(seconds=2.5), Missed.SKIP)
    assert fires == [start, start + timedelta(seconds=1), start + timedelta(seconds=2)]
    assert following == start + timedelta(seconds=3)
    berlin = Cron("30 2 * * *", "Europe/Berlin")  # 02:30 does not exist on the spring-forward day
    assert berlin.next_after(datetime(2030, 3, 31, 0, 0, tzinfo=UTC)).astimezone(UTC) == datetime(2030, 3, 31, 1, 0, tzinfo=UTC)
    assert Cron("@daily").next_after(start) == start + timedelta(days=1)


def test_fired_jobs_are_pending_jobs_like_any_other(app: Conveyor) -> None:
    declare(app)
    app.cron("0 0 * * *", "daily_report", {"kind": "tick"})
    app.cron_sync()
    app.backend.schedule_set("daily_report", paused=False, next_fire_at=app.now().replace(microsecond=0) - timedelta(seconds=1))
    tick(app)
    jobs = app.admin.jobs.list(type="daily_report")
    assert len(jobs) == 1  # the fire a second ago; the next is tomorrow, however slow this tick was
    for job in jobs:
        assert job.state is JobState.PENDING and job.queue == "reports" and job.payload == {"kind": "tick"}
        assert job.unique_key is not None and job.unique_key.startswith("cron:daily_report:")


def test_apps_sharing_a_database_keep_each_others_schedules(app: Conveyor) -> None:
    declare(app)
    app.cron("* * * * *", "ping")
    app.cron_sync()
    other = Conveyor(app.settings.database_url)

    @other.job()
    def cleanup(p: dict) -> None:  # type: ignore[type-arg]
        return None

    other.cron("0 4 * * *", "cleanup")
    other.cron_sync()  # knows nothing of "ping": leaves its schedule alone
    rows = {s.name: s for s in app.backend.schedules_list()}
    assert rows["ping"].active and rows["cleanup"].active
    app.backend.schedule_set("cleanup", paused=False, next_fire_at=app.now() - timedelta(seconds=1))
    tick(app)  # not this app's job type: its own workers fire it
    assert app.admin.jobs.count(type="cleanup") == 0 and app.admin.schedules.get("cleanup").next_fire_at < app.now()
    other.close()
