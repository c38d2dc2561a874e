"""Everyday job control on both backends: stopping running jobs, paused queues, expiry, run-now,
uniqueness by state, run-time schedules, waiting for results and parents' results as arguments."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

from conveyor import (
    Conveyor,
    InvalidTransition,
    Job,
    JobContext,
    JobFailed,
    JobState,
    ResultTimeout,
    ScheduleConflict,
    WorkflowFailed,
    chain,
    step,
)
from conveyor.testing import running_worker, wait_until


def state_is(app: Conveyor, job_id: int, state: JobState) -> bool:
    return app.admin.jobs.get(job_id).state is state


# -- stopping a running job -------------------------------------------------------------


def test_cancelling_a_running_async_job_cancels_its_task_and_never_retries(app: Conveyor) -> None:
    started = threading.Event()
    seen: list[str] = []

    @app.job(max_attempts=5)
    async def long_async(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            seen.append(f"task cancelled, ctx.cancelled={ctx.cancelled.is_set()}")
            raise
        return "finished"

    job_id = app.enqueue("long_async", {})
    # A lease of a minute renews every 20 s: the cancel must reach the worker by NOTIFY (PostgreSQL)
    # or from this process's own write (SQLite), not by waiting for a renewal.
    with running_worker(app, lease_seconds=60.0):
        assert started.wait(10)
        app.admin.jobs.cancel(job_id, actor="test")
        wait_until(lambda: seen, message="the handler's task to be cancelled")
    job = app.admin.jobs.get(job_id)
    assert seen == ["task cancelled, ctx.cancelled=True"]
    assert job.state is JobState.CANCELLED and job.attempt == 1 and job.result is None
    assert job.last_error is not None and job.last_error.error == "cancelled while running"


def test_a_cancelled_sync_job_sees_ctx_cancelled_and_its_late_completion_is_fenced(app: Conveyor) -> None:
    started = threading.Event()
    stopped = threading.Event()

    @app.job()
    def long_sync(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        started.set()
        if ctx.cancelled.wait(60):
            stopped.set()
        return "written too late"

    job_id = app.enqueue("long_sync", {})
    with running_worker(app, lease_seconds=60.0):
        assert started.wait(10)
        app.admin.jobs.cancel(job_id, actor="test")
        assert stopped.wait(10), "ctx.cancelled was never set"
    job = app.admin.jobs.get(job_id)
    assert job.state is JobState.CANCELLED and job.result is None and job.attempt == 1


def test_a_cancel_from_another_process_reaches_the_worker_by_its_lease_renewal(database_url: str) -> None:
    worker_app = Conveyor(database_url, poll_interval=0.05)
    operator = Conveyor(database_url)  # another app object: its cancel does not call the worker's listeners
    started = threading.Event()
    seen: list[bool] = []

    @worker_app.job()
    async def long_async(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            seen.append(ctx.cancelled.is_set())
            raise

    try:
        job_id = worker_app.enqueue("long_async", {})
        with running_worker(worker_app, lease_seconds=1.5):  # renewed every half second
            assert started.wait(10)
            operator.admin.jobs.cancel(job_id, actor="test")
            wait_until(lambda: seen, message="the renewal to notice the cancel")
        assert seen == [True]
        assert operator.admin.jobs.get(job_id).state is JobState.CANCELLED
    finally:
        worker_app.close()
        operator.close()


def test_cancel_refuses_a_finished_job(app: Conveyor) -> None:
    @app.job()
    def quick(p: dict) -> None:  # type: ignore[type-arg]
        return None

    job_id = app.enqueue("quick", {})
    with running_worker(app):
        wait_until(lambda: state_is(app, job_id, JobState.COMPLETED))
    with pytest.raises(InvalidTransition, match="it is completed"):
        app.admin.jobs.cancel(job_id, actor="test")


# -- pausing a queue ----------------------------------------------------------------------


def test_a_paused_queue_is_not_claimed_but_still_takes_jobs_and_running_ones_finish(app: Conveyor) -> None:
    release = threading.Event()

    @app.job(queue="mail")
    def mail(p: dict) -> str:  # type: ignore[type-arg]
        if p.get("block"):
            release.wait(30)
        return "sent"

    @app.job(queue="other")
    def other(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with running_worker(app) as worker:
        running = app.enqueue("mail", {"block": True})
        wait_until(lambda: state_is(app, running, JobState.RUNNING))
        assert app.admin.queues.pause("mail", actor="test") is True
        assert app.admin.queues.pause("mail", actor="test") is False  # already paused
        wait_until(lambda: "mail" in worker.paused, message="the worker to see the pause")
        held = app.enqueue("mail", {})  # enqueueing still works
        release.set()
        wait_until(lambda: state_is(app, running, JobState.COMPLETED))  # the running job finished
        # A job of another queue enqueued after it completes; the paused queue's job is untouched.
        later = app.enqueue("other", {})
        wait_until(lambda: state_is(app, later, JobState.COMPLETED))
        assert app.admin.jobs.get(held).state is JobState.PENDING
        info = {q.name: q for q in app.admin.queues.list()}
        assert info["mail"].paused and info["mail"].paused_at is not None and not info["other"].paused
        assert app.admin.queues.resume("mail", actor="test") is True
        wait_until(lambda: state_is(app, held, JobState.COMPLETED))
    assert app.admin.queues.resume("mail", actor="test") is False


# -- expiry ----------------------------------------------------------------------------------


def test_a_job_not_started_by_its_expiry_ends_expired_never_runs_and_fails_its_dependents(app: Conveyor) -> None:
    ran: list[int] = []

    @app.job()
    def once_code(p: dict) -> None:  # type: ignore[type-arg]
        ran.append(p["n"])

    past = app.now() - timedelta(seconds=1)
    stale = app.enqueue("once_code", {"n": 1}, expires_at=past)
    dependent = app.enqueue("once_code", {"n": 2}, depends_on=[stale])
    fresh = app.enqueue("once_code", {"n": 3}, expires_in=3600)
    with running_worker(app):
        wait_until(lambda: state_is(app, fresh, JobState.COMPLETED))
        wait_until(lambda: state_is(app, stale, JobState.EXPIRED))
    assert ran == [3]
    job = app.admin.jobs.get(stale)
    assert job.expires_at is not None and job.finished_at is not None
    assert job.last_error is not None and job.last_error.error.startswith("expired")
    assert app.admin.jobs.get(dependent).state is JobState.CANCELLED
    assert app.admin.stats().total.counts["expired"] == 1
    with pytest.raises(JobFailed, match="expired") as failed:
        app.admin.jobs.result(stale, timeout=5)
    assert failed.value.state == "expired"


def test_expiry_options_are_checked(app: Conveyor) -> None:
    from conveyor import OptionError

    @app.job()
    def anything(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with pytest.raises(OptionError, match="expires_in"):
        app.enqueue("anything", {}, expires_in=-5)
    with pytest.raises(OptionError, match="expires_at"):
        app.enqueue("anything", {}, expires_at="tomorrow")


# -- run now ----------------------------------------------------------------------------------


def test_run_now_makes_a_delayed_job_due(app: Conveyor) -> None:
    @app.job()
    def later(p: dict) -> str:  # type: ignore[type-arg]
        return "ran"

    job_id = app.enqueue("later", {}, delay=3600)
    assert app.admin.jobs.get(job_id).state is JobState.SCHEDULED
    app.admin.jobs.run_now(job_id, actor="test")
    assert app.admin.jobs.get(job_id).state is JobState.PENDING
    with running_worker(app):
        assert app.admin.jobs.result(job_id, timeout=10) == "ran"
    with pytest.raises(InvalidTransition, match="cannot run now job .*: it is completed"):
        app.admin.jobs.run_now(job_id, actor="test")


# -- uniqueness by state ----------------------------------------------------------------------


def test_a_key_blocks_only_while_its_job_is_unfinished_by_default(app: Conveyor) -> None:
    @app.job(max_attempts=1)
    def keyed(p: dict) -> None:  # type: ignore[type-arg]
        if p.get("fail"):
            raise RuntimeError("boom")

    first = app.enqueue("keyed", {"n": 1}, idempotency_key="k")
    assert app.enqueue("keyed", {"n": 2}, idempotency_key="k") == first  # pending: blocks
    dies = app.enqueue("keyed", {"fail": True}, idempotency_key="d")
    with running_worker(app):
        wait_until(lambda: state_is(app, first, JobState.COMPLETED) and state_is(app, dies, JobState.DEAD))
    second = app.enqueue("keyed", {"n": 3}, idempotency_key="k")  # completed: no longer blocks
    assert second != first
    assert app.enqueue("keyed", {}, idempotency_key="d") != dies  # a dead job does not block forever


def test_unique_states_can_make_a_key_block_for_ever(app: Conveyor) -> None:
    @app.job()
    def keyed(p: dict) -> None:  # type: ignore[type-arg]
        return None

    ever = ["waiting", "scheduled", "pending", "running", "completed", "dead", "cancelled", "expired"]
    first = app.enqueue("keyed", {}, idempotency_key="once", unique_states=ever)
    with running_worker(app):
        wait_until(lambda: state_is(app, first, JobState.COMPLETED))
    assert app.enqueue("keyed", {}, idempotency_key="once", unique_states=ever) == first
    many = app.enqueue_many([("keyed", {}, {"idempotency_key": "once", "unique_states": ever})])
    assert many == [first]
    from conveyor import OptionError

    with pytest.raises(OptionError, match="unique_states"):
        app.enqueue("keyed", {}, idempotency_key="x", unique_states=["finished"])


def test_on_duplicate_replace_debounces_the_waiting_job(app: Conveyor) -> None:
    @app.job()
    def reindex(p: dict) -> None:  # type: ignore[type-arg]
        return None

    first = app.enqueue("reindex", {"v": 1}, idempotency_key="idx", delay=3600)
    again = app.enqueue("reindex", {"v": 2}, idempotency_key="idx", delay=60, on_duplicate="replace")
    assert again == first
    job = app.admin.jobs.get(first)
    assert job.payload == {"v": 2} and job.state is JobState.SCHEDULED
    assert (job.run_at - app.now()).total_seconds() < 120  # the new run time, not the hour
    now = app.enqueue("reindex", {"v": 3}, idempotency_key="idx", on_duplicate="replace")
    assert now == first and app.admin.jobs.get(first).state is JobState.PENDING and app.admin.jobs.get(first).payload == {"v": 3}
    kept = app.enqueue("reindex", {"v": 4}, idempotency_key="idx")  # the default keeps the holder as it is
    assert kept == first and app.admin.jobs.get(first).payload == {"v": 3}


# -- schedules at run time --------------------------------------------------------------------


def test_schedules_added_changed_and_removed_at_run_time(app: Conveyor) -> None:
    @app.job()
    def tick(p: dict) -> Any:  # type: ignore[type-arg]
        return p

    schedule = app.admin.schedules.add("ticker", "* * * * * *", "tick", {"v": 1}, actor="test")
    assert schedule.source == "runtime" and schedule.active
    with pytest.raises(ScheduleConflict, match="exists already"):
        app.admin.schedules.add("ticker", "* * * * * *", "tick", {"v": 1}, actor="test")
    with running_worker(app):
        fired = wait_until(lambda: app.admin.jobs.list(type="tick"), message="the run-time schedule to fire")
    assert fired[0].payload == {"v": 1}
    changed = app.admin.schedules.update("ticker", "0 0 1 1 *", "tick", {"v": 2}, actor="test")
    assert changed.expression == "0 0 1 1 *" and changed.payload == {"v": 2}
    app.admin.schedules.remove("ticker", actor="test")
    assert all(s.name != "ticker" for s in app.admin.schedules.list())


def test_a_schedule_declared_in_code_wins_over_a_run_time_one_and_cannot_be_removed_at_run_time(database_url: str) -> None:
    first = Conveyor(database_url)
    second = Conveyor(database_url)
    for a in (first, second):

        @a.job()
        def report(p: dict) -> None:  # type: ignore[type-arg]
            return None

    try:
        first.admin.schedules.add("report", "0 3 * * *", "report", actor="test")
        second.cron("0 4 * * *", "report", name="report")
        second.cron_sync()  # what a worker of the second app does when it starts
        found = first.admin.schedules.get("report")
        assert (found.source, found.expression) == ("code", "0 4 * * *")
        with pytest.raises(ScheduleConflict, match="declared in code"):
            first.admin.schedules.remove("report", actor="test")
        with pytest.raises(ScheduleConflict, match="declared in code"):
            first.admin.schedules.update("report", "0 5 * * *", "report", actor="test")
    finally:
        first.close()
        second.close()


# -- results ------------------------------------------------------------------------------------


def test_waiting_for_a_result_sync_and_async(app: Conveyor) -> None:
    @app.job()
    def double(p: dict) -> dict:  # type: ignore[type-arg]
        return {"n": p["n"] * 2}

    a = app.enqueue("double", {"n": 2})
    b = app.enqueue("double", {"n": 5})
    with pytest.raises(ResultTimeout, match=f"job {a} not finished after 0.1 s \\(it is pending\\)"):
        app.admin.jobs.result(a, timeout=0.1)
    with running_worker(app):
        assert app.admin.jobs.result(a, timeout=10) == {"n": 4}
        assert asyncio.run(app.admin.jobs.aresult(b, timeout=10)) == {"n": 10}


def test_waiting_on_a_dead_job_raises_with_its_last_error(app: Conveyor) -> None:
    @app.job(max_attempts=1)
    def broken(p: dict) -> None:  # type: ignore[type-arg]
        raise ValueError("no such customer")

    job_id = app.enqueue("broken", {})
    with running_worker(app), pytest.raises(JobFailed) as failed:
        app.admin.jobs.result(job_id, timeout=10)
    assert failed.value.state == "dead" and failed.value.error == "ValueError: no such customer"
    assert failed.value.job.id == job_id


def test_a_chain_step_takes_its_parents_result_as_an_argument_and_the_workflow_can_be_awaited(app: Conveyor) -> None:
    @app.job()
    def fetch(p: dict) -> dict:  # type: ignore[type-arg]
        return {"price": p["price"]}

    @app.job()
    def add_tax(p: dict, *, parent_result: dict) -> float:  # type: ignore[type-arg]
        return round(float(parent_result["price"]) * float(p["rate"]), 2)

    @app.job()
    async def record(p: dict, ctx: JobContext, *, parent_results: dict[int, Any]) -> list[Any]:  # type: ignore[type-arg]
        return list(parent_results.values())

    handle = app.enqueue_workflow(chain(step("fetch", {"price": 10}), step("add_tax", {"rate": 1.2}), step("record", {})))
    with running_worker(app):
        status = app.admin.workflows.result(handle.id, timeout=20)
    assert status.state == "completed"
    assert app.admin.jobs.get(handle.job_ids[1]).result == 12.0
    assert app.admin.jobs.get(handle.job_ids[2]).result == [12.0]


def test_waiting_on_a_failed_workflow_raises_naming_the_job(app: Conveyor) -> None:
    @app.job(max_attempts=1)
    def fails(p: dict) -> None:  # type: ignore[type-arg]
        raise RuntimeError("card declined")

    @app.job()
    def after(p: dict) -> None:  # type: ignore[type-arg]
        return None

    handle = app.enqueue_workflow(chain(step("fails", {}), step("after", {})))
    with running_worker(app), pytest.raises(WorkflowFailed, match="card declined") as failed:
        asyncio.run(app.admin.workflows.aresult(handle.id, timeout=20))
    assert failed.value.status.state == "failed" and failed.value.job_id == handle.job_ids[0]


# -- retry defaults ------------------------------------------------------------------------------


def test_the_worker_retries_with_exponential_backoff_jitter_and_cap(app: Conveyor) -> None:
    from conveyor import Exponential

    @app.job(max_attempts=5, backoff=Exponential(base=40.0, cap=100.0))
    def flaky(p: dict) -> None:  # type: ignore[type-arg]
        raise ConnectionError("provider down")

    ids = [app.enqueue("flaky", {"n": n}) for n in range(4)]
    waits: dict[int, list[float]] = {i: [] for i in ids}
    with running_worker(app):
        for attempt in (1, 2, 3):
            for job_id in ids:

                def failed(job_id: int = job_id, attempt: int = attempt) -> Job | None:
                    job = app.admin.jobs.get(job_id)
                    return job if job.state is JobState.SCHEDULED and len(job.errors) == attempt else None

                job = wait_until(failed, message=f"failure {attempt} of job {job_id}")
                assert job is not None
                last = job.errors[-1]
                waits[job_id].append((job.run_at - last.at).total_seconds())
                app.admin.jobs.run_now(job_id, actor="test")  # skip the wait instead of sleeping through it
    for job_id in ids:
        first, second, third = waits[job_id]
        assert 20 - 0.5 <= first <= 40 + 0.5  # 40 s, its upper half jittered
        assert 40 - 0.5 <= second <= 80 + 0.5  # doubled
        assert 50 - 0.5 <= third <= 100 + 0.5  # 160 s capped at 100
    assert len({round(w[0], 3) for w in waits.values()}) > 1, "every job waited exactly as long: no jitter"


def test_default_retry_policy_rides_out_hours() -> None:
    from conveyor.options import JobOptions
    from conveyor.retry import Exponential, schedule

    options = JobOptions()
    assert options.max_attempts == 20 and options.backoff_strategy == Exponential()
    table = schedule(Exponential(), options.max_attempts)
    assert len(table) == 19
    assert table[0][1:3] == (1.0, 2.0) and table[-1][1:3] == (1800.0, 3600.0)
    assert 4 * 3600 < table[-1][3] and table[-1][4] < 10 * 3600  # between 4.5 and 9.2 hours in all
