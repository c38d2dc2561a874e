"""Single bad values met by a real worker: an outcome the database refuses, text no database
keeps, a row that cannot be read back. Each ends alone, with a readable reason; every other job
completes once and the worker stops when asked."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import Conveyor, JobState, Snooze, Throttled
from conveyor.outcome import MAX_ASKED_WAIT
from conveyor.testing import running_worker, wait_until
from conveyor.timeutil import MAX_DELAY

FINAL = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


def refuse_results_containing(app: Conveyor, word: str) -> None:
    """Make the database itself refuse one outcome: a trigger (SQLite) or a CHECK (PostgreSQL)."""
    with app.transaction() as tx:
        if isinstance(tx, sqlite3.Connection):
            tx.execute(
                "CREATE TRIGGER refuse_poison BEFORE UPDATE OF result ON conveyor_jobs "
                f"WHEN NEW.result LIKE '%{word}%' BEGIN SELECT RAISE(ABORT, 'poisoned result refused'); END"
            )
        else:
            tx.execute(f"ALTER TABLE conveyor_jobs ADD CONSTRAINT refuse_poison CHECK (result::text NOT LIKE '%{word}%')")


def every_job_readable(app: Conveyor) -> None:
    """The admin surfaces read every row: list, get, dead letters."""
    jobs = app.admin.jobs.list(limit=1000)
    for job in jobs:
        assert app.admin.jobs.get(job.id).id == job.id
        for error in job.errors:
            error.error.encode("utf-8")  # storable text: no lone surrogate came back
    app.admin.dead_letters.list(limit=1000)


def test_an_outcome_the_database_refuses_is_written_as_a_failure_alone(app: Conveyor) -> None:
    @app.job(max_attempts=1)
    def task(p: dict) -> dict:  # type: ignore[type-arg]
        return {"word": p["word"]}

    refuse_results_containing(app, "poison")
    fine = [app.enqueue("task", {"word": f"fine{i}"}) for i in range(10)]
    bad = app.enqueue("task", {"word": "poison"})
    fine += [app.enqueue("task", {"word": f"fine{i}"}) for i in range(10, 20)]
    with running_worker(app, concurrency=8):
        wait_until(lambda: app.admin.jobs.get(bad).state is JobState.DEAD, message="the refused outcome written as a failure")
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.COMPLETED for i in fine))
    job = app.admin.jobs.get(bad)
    assert job.attempt == 1
    error = job.errors[-1].error
    assert "outcome could not be stored" in error and ("poisoned result refused" in error or "refuse_poison" in error), error
    assert all(app.admin.jobs.get(i).result == {"word": app.admin.jobs.get(i).payload["word"]} for i in fine)
    every_job_readable(app)


def raise_nul(p: dict[str, Any]) -> None:
    raise ValueError("bad\x00byte")


def raise_surrogate(p: dict[str, Any]) -> None:
    raise ValueError("bad \ud800")


def return_nul(p: dict[str, Any]) -> Any:
    return {"s": "a\x00b", "k\x00": 1}


def return_surrogate(p: dict[str, Any]) -> Any:
    return ["x\ud800", "pair \U0001f680"]


def return_snooze_inf(p: dict[str, Any]) -> Any:
    return Snooze(math.inf)


def child_with_nul_key(p: dict[str, Any], ctx: Any) -> None:
    ctx.enqueue("ordinary", {"n": -1}, idempotency_key="key\x00")


POISONS: dict[str, tuple[Callable[..., Any], JobState, str]] = {
    "exception-nul": (raise_nul, JobState.DEAD, "bad\\x00byte"),
    "exception-surrogate": (raise_surrogate, JobState.DEAD, "bad \\ud800"),
    "result-nul": (return_nul, JobState.COMPLETED, ""),
    "result-surrogate": (return_surrogate, JobState.COMPLETED, ""),
    "snooze-inf": (return_snooze_inf, JobState.DEAD, "Snooze seconds"),
    "child-key-nul": (child_with_nul_key, JobState.DEAD, "idempotency_key"),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poison_value_ends_its_job_alone_and_every_other_job_completes(app: Conveyor, poison: str) -> None:
    handler, state, reason = POISONS[poison]
    app.job("poison", max_attempts=1)(handler)

    @app.job()
    def ordinary(p: dict) -> int:  # type: ignore[type-arg]
        return int(p["n"])

    fine = [app.enqueue("ordinary", {"n": i}) for i in range(10)]
    bad = [app.enqueue("poison", {}) for _ in range(2)]
    fine += [app.enqueue("ordinary", {"n": i}) for i in range(10, 20)]
    with running_worker(app, concurrency=4):
        wait_until(lambda: all(app.admin.jobs.get(i).state in FINAL for i in bad), message=f"the {poison} jobs to end")
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.COMPLETED for i in fine))
    for job_id in bad:
        job = app.admin.jobs.get(job_id)
        assert job.state is state, (job.state, job.errors)
        assert job.attempt == 1
        if reason:
            assert reason in job.errors[-1].error, job.errors[-1].error
    assert [app.admin.jobs.get(i).result for i in fine] == list(range(20))
    if poison == "result-nul":
        assert app.admin.jobs.get(bad[0]).result == {"s": "a\ufffdb", "k\ufffd": 1}
    if poison == "result-surrogate":
        assert app.admin.jobs.get(bad[0]).result == ["x\ufffd", "pair \U0001f680"]
    assert app.admin.jobs.count(type=["ordinary"]) == 20  # the child with the NUL key was not inserted
    every_job_readable(app)


def test_a_remote_retry_after_of_inf_snoozes_for_a_day_at_most(app: Conveyor) -> None:
    @app.job(max_attempts=1)
    def call_remote(p: dict) -> None:  # type: ignore[type-arg]
        raise Throttled(p["header"])

    ids = [app.enqueue("call_remote", {"header": h}) for h in ("inf", "1e12", "nan")]
    with running_worker(app):
        wait_until(lambda: all(app.admin.jobs.get(i).state is JobState.SCHEDULED for i in ids))
    now = app.now()
    waits = [(app.admin.jobs.get(i).run_at - now).total_seconds() for i in ids]
    assert MAX_ASKED_WAIT - 60 < waits[0] <= MAX_ASKED_WAIT
    assert MAX_ASKED_WAIT - 60 < waits[1] <= MAX_ASKED_WAIT
    assert 0 < waits[2] <= 60  # unreadable: the default
    assert all(app.admin.jobs.get(i).attempt == 0 for i in ids)  # a snooze spends no attempt
    every_job_readable(app)


def test_a_backoff_that_answers_inf_or_nan_retries_within_bounds(app: Conveyor) -> None:
    answers = {"inf": math.inf, "nan": math.nan}

    @app.job(max_attempts=3, backoff=lambda attempt: answers["inf"])
    def endless(p: dict) -> None:  # type: ignore[type-arg]
        raise RuntimeError("fails")

    @app.job(max_attempts=3, backoff=lambda attempt: answers["nan"])
    def unknown(p: dict) -> None:  # type: ignore[type-arg]
        raise RuntimeError("fails")

    a, b = app.enqueue("endless", {}), app.enqueue("unknown", {})
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(a).state is JobState.SCHEDULED and app.admin.jobs.get(b).state is JobState.SCHEDULED)
    assert (app.admin.jobs.get(a).run_at - app.now()).total_seconds() <= MAX_DELAY
    assert (app.admin.jobs.get(b).run_at - app.now()).total_seconds() <= 60  # the exponential fallback
    every_job_readable(app)
