"""The worker in-process: handlers, retries, timeouts, events, context, dead letters — both backends."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor import Cancel, Conveyor, JobContext, JobEvent, JobState, Snooze
from conveyor.backends.base import ClaimParams, Lease
from conveyor.outcome import Dead
from conveyor.testing import running_worker, wait_until
from conveyor.worker.executor import Executor


class V2(BaseModel):
    order_id: int  # the model changed since the jobs were enqueued


def state_of(app: Conveyor, job_id: int, *states: JobState) -> bool:
    return app.admin.jobs.get(job_id).state in states


def test_sync_and_async_handlers_run_and_store_results(app: Conveyor) -> None:
    threads: list[str] = []

    @app.job()
    def sync_job(p: dict) -> dict:  # type: ignore[type-arg]
        threads.append(threading.current_thread().name)
        return {"doubled": p["n"] * 2}

    @app.job()
    async def async_job(p: dict) -> int:  # type: ignore[type-arg]
        await asyncio.sleep(0.01)
        return int(p["n"]) + 1

    a = app.enqueue("sync_job", {"n": 21})
    b = app.enqueue("async_job", {"n": 41})
    with running_worker(app):
        wait_until(lambda: state_of(app, a, JobState.COMPLETED) and state_of(app, b, JobState.COMPLETED))
    assert app.admin.jobs.get(a).result == {"doubled": 42}
    assert app.admin.jobs.get(b).result == 42
    assert threads and threads[0].startswith("conveyor-job")


def test_failures_retry_with_backoff_then_dead_letter_with_every_error(app: Conveyor) -> None:
    @app.job(max_attempts=3, backoff=0.05)
    def always_fails(p: dict) -> None:  # type: ignore[type-arg]
        raise ValueError(f"bad input {p['n']}")

    job_id = app.enqueue("always_fails", {"n": 7})
    with running_worker(app):
        wait_until(lambda: state_of(app, job_id, JobState.DEAD))
    job = app.admin.jobs.get(job_id)
    assert job.attempt == 3
    assert [e.error for e in job.errors] == ["ValueError: bad input 7"] * 3
    assert [e.attempt for e in job.errors] == [1, 2, 3]
    assert job.errors[0].traceback is not None and "always_fails" in job.errors[0].traceback


def test_events_completed_failed_dead(app: Conveyor) -> None:
    seen: list[tuple[str, int, int]] = []

    @app.job(max_attempts=3, backoff=0.01)
    def flaky(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        if p["fail"] or ctx.attempt < 2:
            raise RuntimeError("nope")
        return "ok"

    @app.on("failed")
    def failed(e: JobEvent) -> None:
        seen.append(("failed", e.job.id, e.attempt))

    @app.on("dead")
    async def dead(e: JobEvent) -> None:
        seen.append(("dead", e.job.id, e.attempt))

    @app.on("completed")
    def completed(e: JobEvent) -> None:
        seen.append(("completed", e.job.id, e.attempt))
        raise RuntimeError("a broken subscriber must not hurt the job")

    ok = app.enqueue("flaky", {"fail": False})
    bad = app.enqueue("flaky", {"fail": True})
    with running_worker(app):
        wait_until(lambda: ("dead", bad, 3) in seen and ("completed", ok, 2) in seen)
    assert ("failed", ok, 1) in seen
    assert [s for s in seen if s[1] == bad] == [("failed", bad, 1), ("failed", bad, 2), ("failed", bad, 3), ("dead", bad, 3)]
    assert app.admin.jobs.get(ok).state is JobState.COMPLETED


def test_unknown_type_and_payload_that_no_longer_validates_go_to_the_dlq(app: Conveyor, database_url: str) -> None:
    producer = Conveyor(database_url)

    @producer.job()
    def renamed_away(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @producer.job(name="process")
    def process_v1(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job()
    def process(p: V2) -> None:
        return None

    @app.job()
    def healthy(p: dict) -> None:  # type: ignore[type-arg]
        return None

    unknown = producer.enqueue("renamed_away", {})
    invalid = producer.enqueue("process", {"order_id": "abc"})
    fine = app.enqueue("healthy", {})
    producer.close()
    with running_worker(app):
        wait_until(lambda: state_of(app, fine, JobState.COMPLETED) and state_of(app, invalid, JobState.DEAD) and state_of(app, unknown, JobState.DEAD))
    assert "unknown job type 'renamed_away'" in app.admin.jobs.get(unknown).errors[-1].error
    assert "order_id" in app.admin.jobs.get(invalid).errors[-1].error
    assert app.admin.jobs.get(invalid).attempt == 1  # not retried: it cannot succeed


def test_async_timeout_cancels_and_retries(app: Conveyor) -> None:
    cancelled = threading.Event()

    @app.job(timeout=0.2, max_attempts=2, backoff=0.01)
    async def slow(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        if ctx.attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return "second time lucky"

    job_id = app.enqueue("slow", {})
    with running_worker(app):
        wait_until(lambda: state_of(app, job_id, JobState.COMPLETED))
    job = app.admin.jobs.get(job_id)
    assert cancelled.is_set()
    assert job.errors[0].error == "JobTimeout: timed out after 0.2 s"
    assert job.result == "second time lucky" and job.attempt == 2


def test_sync_timeout_is_recorded_and_the_late_result_is_ignored(app: Conveyor) -> None:
    finished_late = threading.Event()

    @app.job(timeout=0.2, max_attempts=2, backoff=0.01)
    def slow(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        if ctx.attempt == 1:
            ctx.cancelled.wait(5)  # a cooperative handler notices the timeout
            time.sleep(0.3)
            finished_late.set()
            return "late"
        return "on time"

    job_id = app.enqueue("slow", {})
    with running_worker(app):
        wait_until(lambda: state_of(app, job_id, JobState.COMPLETED))
        wait_until(finished_late.is_set)
        time.sleep(0.2)  # give a wrong write-back of the late result every chance to happen
    job = app.admin.jobs.get(job_id)
    assert job.result == "on time" and job.attempt == 2
    assert job.errors[0].error == "JobTimeout: timed out after 0.2 s"


def test_snooze_and_cancel_outcomes(app: Conveyor) -> None:
    @app.job(max_attempts=1)
    def rate_limited(p: dict, ctx: JobContext) -> object:  # type: ignore[type-arg]
        if ctx.job.errors or ctx.job.run_at <= ctx.job.created_at:
            pass
        if not p.get("second"):
            raise Snooze(0.2, "remote answered 429")
        return Cancel("order was refunded")

    job_id = app.enqueue("rate_limited", {})
    again = app.enqueue("rate_limited", {"second": True})
    with running_worker(app):
        wait_until(lambda: state_of(app, again, JobState.CANCELLED))
        wait_until(lambda: app.admin.jobs.get(job_id).state is JobState.SCHEDULED or app.admin.jobs.get(job_id).attempt == 0, timeout=5)
    snoozed = app.admin.jobs.get(job_id)
    assert snoozed.attempt == 0 and snoozed.state in (JobState.SCHEDULED, JobState.PENDING)  # no attempt spent
    assert app.admin.jobs.get(again).errors[-1].error == "cancelled: order was refunded"


def test_ctx_enqueue_commits_children_only_with_completion(app: Conveyor) -> None:
    @app.job(max_attempts=2, backoff=0.01)
    def parent(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        ctx.enqueue("child", {"n": 1})
        ctx.enqueue("child", {"n": 2})
        if p["fail"]:
            raise RuntimeError("parent failed after enqueueing")

    @app.job()
    def child(p: dict) -> None:  # type: ignore[type-arg]
        return None

    bad = app.enqueue("parent", {"fail": True}, workflow_id="wf-bad")
    good = app.enqueue("parent", {"fail": False}, workflow_id="wf-good")
    with running_worker(app):
        wait_until(lambda: state_of(app, bad, JobState.DEAD) and app.admin.jobs.count(type="child", state="completed") == 2)
    children = app.admin.jobs.list(type="child")
    assert len(children) == 2
    assert {c.parent_id for c in children} == {good}
    assert {c.workflow_id for c in children} == {"wf-good"}


def test_ctx_once_skips_finished_steps_on_retry(app: Conveyor, tmp_path: Path) -> None:
    charges = tmp_path / "charges.log"

    def charge(order: str) -> str:
        with charges.open("a") as f:
            f.write(order + "\n")
        return f"ch_{order}"

    @app.job(max_attempts=3, backoff=0.01)
    def pay(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        receipt = ctx.once("charge", charge, p["order"])
        if ctx.attempt == 1:
            raise ConnectionError("email server down after charging")
        return str(receipt)

    @app.job(max_attempts=3, backoff=0.01)
    async def apay(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        async def acharge() -> str:
            return charge(p["order"])

        receipt = await ctx.aonce("charge", acharge)
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return str(receipt)

    a = app.enqueue("pay", {"order": "o1"})
    b = app.enqueue("apay", {"order": "o2"})
    with running_worker(app):
        wait_until(lambda: state_of(app, a, JobState.COMPLETED) and state_of(app, b, JobState.COMPLETED))
    assert charges.read_text().splitlines() == ["o1", "o2"] or sorted(charges.read_text().splitlines()) == ["o1", "o2"]
    assert app.admin.jobs.get(a).result == "ch_o1" and app.admin.jobs.get(a).attempt == 2
    assert app.admin.jobs.get(b).result == "ch_o2"


def test_progress_is_stored(app: Conveyor) -> None:
    release = threading.Event()

    @app.job()
    def import_rows(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        ctx.progress({"done": 50, "of": 100})
        release.wait(10)

    job_id = app.enqueue("import_rows", {})
    with running_worker(app, lease_seconds=0.6):
        wait_until(lambda: app.admin.jobs.get(job_id).progress == {"done": 50, "of": 100})
        release.set()
        wait_until(lambda: state_of(app, job_id, JobState.COMPLETED))


def test_hostile_exception_str_does_not_crash_the_worker(app: Conveyor) -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str() exploded")

    @app.job(max_attempts=1)
    def nasty(p: dict) -> None:  # type: ignore[type-arg]
        raise Nasty()

    @app.job()
    def fine(p: dict) -> None:  # type: ignore[type-arg]
        return None

    bad = app.enqueue("nasty", {})
    good = app.enqueue("fine", {})
    with running_worker(app):
        wait_until(lambda: state_of(app, bad, JobState.DEAD) and state_of(app, good, JobState.COMPLETED))
    assert app.admin.jobs.get(bad).errors[-1].error.startswith("Nasty")


def test_concurrency_runs_jobs_at_once_with_batched_claims(app: Conveyor) -> None:
    running = peak = 0

    @app.job()
    async def nap(p: dict) -> None:  # type: ignore[type-arg]
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(400):  # wait for company (at most 20 s): how long that takes does not matter
            if peak == 40:
                break
            await asyncio.sleep(0.05)
        running -= 1

    app.enqueue_many([("nap", {}) for _ in range(40)])
    with running_worker(app, concurrency=40):
        wait_until(lambda: app.admin.jobs.count(state="completed") == 40, timeout=60)
    assert peak == 40  # all forty ran at once


def test_worker_liveness_is_recorded_and_removed(app: Conveyor) -> None:
    @app.job(queue="mail")
    def m(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with running_worker(app, concurrency=7) as worker:
        (info,) = wait_until(app.admin.workers.list)
        assert info.id == worker.id and info.queues == ("mail",) and info.concurrency == 7
        assert info.heartbeat_at is not None and info.pid > 0
    assert app.admin.workers.list() == []


def test_an_enqueue_wakes_an_idle_worker_before_its_poll(app: Conveyor, database_url: str) -> None:
    @app.job()
    def ping(p: dict) -> None:  # type: ignore[type-arg]
        return None

    other = Conveyor(database_url)  # another client, as a web process would be: NOTIFY, or SQLite's commit counter
    other.job()(ping)
    client = other
    with running_worker(app, poll_interval=30):
        time.sleep(0.3)  # let the worker go idle
        job_id = client.enqueue("ping", {})
        wait_until(lambda: state_of(app, job_id, JobState.COMPLETED), timeout=20)  # well before the 30 s poll
    same_process = app.enqueue("ping", {})
    with running_worker(app, poll_interval=30):
        time.sleep(0.3)
        wait_until(lambda: state_of(app, same_process, JobState.COMPLETED), timeout=10)
    other.close()


@pytest.mark.parametrize("n", [1])
def test_released_job_is_picked_up_again(app: Conveyor, n: int) -> None:
    gate = threading.Event()

    @app.job()
    def stubborn(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        if ctx.attempt == 1 and not p.get("quick"):
            gate.wait(3)
            return "first"
        return "second"

    job_id = app.enqueue("stubborn", {})
    with running_worker(app, shutdown_grace=0.2):
        wait_until(lambda: state_of(app, job_id, JobState.RUNNING))
    released = app.admin.jobs.get(job_id)
    gate.set()
    assert released.state is JobState.PENDING and released.attempt == 0
    with running_worker(app):
        wait_until(lambda: state_of(app, job_id, JobState.COMPLETED))
    assert app.admin.jobs.get(job_id).attempt == 1


def test_a_sync_run_whose_lease_was_lost_keeps_its_slot_until_its_thread_returns(app: Conveyor, caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    events: list[tuple[str, int]] = []

    @app.job(max_attempts=5)
    def hold(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        events.append(("start", ctx.job_id))
        gate.wait(60)  # ignores ctx.cancelled: its thread cannot be taken back
        events.append(("end", ctx.job_id))

    ids = [app.enqueue("hold", {}) for _ in range(8)]
    lost = ids[0]
    with running_worker(app, concurrency=8, lease_seconds=1.5):  # 8 slots: one held thread does not ask for a replacement
        wait_until(lambda: len(events) == 8)
        app.backend.jobs_release([Lease(lost, app.admin.jobs.get(lost).lease_token)])  # as if rescued elsewhere: the lease is gone
        wait_until(lambda: f"job {lost}: lease lost" in caplog.text)
        time.sleep(0.5)  # give a wrong claim into the held thread's slot every chance (poll 0.05 s)
        assert app.admin.jobs.get(lost).state is JobState.PENDING  # its slot stays taken while its thread runs on
        gate.set()
        wait_until(lambda: all(state_of(app, i, JobState.COMPLETED) for i in ids))
    assert events.count(("start", lost)) == 2 and events.count(("end", lost)) == 2  # once given up, once to completion


def test_a_queued_sync_call_given_up_before_a_thread_is_free_never_starts(app: Conveyor) -> None:
    started = threading.Event()

    @app.job(timeout=0.3, max_attempts=1)
    def queued(p: dict) -> None:  # type: ignore[type-arg]
        started.set()

    app.enqueue("queued", {})
    [job] = app.backend.jobs_claim(ClaimParams("w1", ("default",), 1, 30.0))
    threads = ThreadPoolExecutor(max_workers=1)
    busy = threading.Event()
    threads.submit(busy.wait, 30)  # the only thread is taken: the call queues behind it
    executor = Executor(app, "w1", threads)
    result = asyncio.run(executor.run(job, JobContext(app, job, "w1")))
    assert isinstance(result.outcome, Dead) and result.outcome.error == "JobTimeout: timed out after 0.3 s"
    busy.set()
    threads.shutdown(wait=True)  # the queued call's turn comes: it must not start
    assert not started.is_set()


def test_a_worker_that_cannot_renew_its_leases_says_so_and_recovers(app: Conveyor, caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    runs: list[int] = []

    @app.job(max_attempts=3, backoff=0.05)
    def hold(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        runs.append(ctx.attempt)
        gate.wait(60)
        return "done"

    job_id = app.enqueue("hold", {})
    with running_worker(app, lease_seconds=1.5):
        wait_until(lambda: runs == [1])
        with app.transaction() as tx:  # every statement on the jobs table now fails, the renewal first
            tx.execute("ALTER TABLE conveyor_jobs RENAME TO conveyor_jobs_away")
        try:
            wait_until(lambda: "cannot renew leases" in caplog.text and "no sync handler starts here" in caplog.text)
            wait_until(lambda: f"job {job_id}: lease about to expire while the database is unreachable" in caplog.text)
        finally:
            with app.transaction() as tx:
                tx.execute("ALTER TABLE conveyor_jobs_away RENAME TO conveyor_jobs")
        gate.set()  # the given-up run ends; its result is not written (its lease was given up)
        wait_until(lambda: state_of(app, job_id, JobState.COMPLETED), timeout=30)  # rescued, run again
        wait_until(lambda: "sync handlers start again" in caplog.text)
    job = app.admin.jobs.get(job_id)
    assert runs == [1, 2] and job.attempt == 2 and job.result == "done"
