"""Nothing silent: results and ctx.once values stored as pydantic writes JSON, or the run fails saying why — both backends."""

from __future__ import annotations

import logging
import uuid
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum

import pytest
from pydantic import BaseModel

from conveyor import Conveyor, JobContext, JobState, ResultError
from conveyor.result import encode_result
from conveyor.testing import running_worker, wait_until


class Colour(Enum):
    RED = "red"


class Invoice(BaseModel):
    number: int
    total: Decimal
    issued: datetime


ISSUED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def finished(app: Conveyor, job_id: int) -> bool:
    return app.admin.jobs.get(job_id).finished


def test_datetime_decimal_and_model_results_round_trip_as_json_and_a_set_fails_the_run(app: Conveyor) -> None:
    @app.job()
    def when(p: dict) -> datetime:  # type: ignore[type-arg]
        return ISSUED

    @app.job()
    def amount(p: dict) -> Decimal:  # type: ignore[type-arg]
        return Decimal("12.30")

    @app.job()
    def invoice(p: dict) -> Invoice:  # type: ignore[type-arg]
        return Invoice(number=7, total=Decimal("0.10"), issued=ISSUED)

    @app.job(max_attempts=1)
    def tags(p: dict) -> set[str]:  # type: ignore[type-arg]
        return {"a", "b"}

    ids = [handle.enqueue({}) for handle in (when, amount, invoice, tags)]
    with running_worker(app):
        wait_until(lambda: all(finished(app, i) for i in ids), message="the four jobs to finish")
    a, b, c, d = (app.admin.jobs.get(i) for i in ids)
    assert (a.state, a.result) == (JobState.COMPLETED, "2030-01-02T03:04:05Z")
    assert (b.state, b.result) == (JobState.COMPLETED, "12.30")
    assert (c.state, c.result) == (JobState.COMPLETED, {"number": 7, "total": "0.10", "issued": "2030-01-02T03:04:05Z"})
    assert d.state is JobState.DEAD and d.result is None
    assert d.errors[-1].error == "ResultError: a set cannot be stored as JSON (it would come back as a list); return a list"


def test_a_result_over_max_result_bytes_fails_the_run_naming_the_size(database_url: str) -> None:
    app = Conveyor(database_url, poll_interval=0.05, max_result_bytes=100)
    try:
        @app.job(max_attempts=2, backoff=0.01)
        def report(p: dict) -> str:  # type: ignore[type-arg]
            return "x" * 200

        job_id = report.enqueue({})
        with running_worker(app):
            wait_until(lambda: finished(app, job_id), message="the job to die")
        job = app.admin.jobs.get(job_id)
        assert job.state is JobState.DEAD and job.attempt == 2
        assert [e.error for e in job.errors] == ["ResultError: the value is 202 bytes as JSON, over the limit of 100 (setting max_result_bytes)"] * 2
    finally:
        app.close()


def test_a_once_step_returning_a_decimal_gives_it_back_on_the_retry(app: Conveyor) -> None:
    seen: list[object] = []
    charges: list[int] = []

    @app.job(max_attempts=3, backoff=0.01)
    def pay(p: dict, ctx: JobContext) -> str:  # type: ignore[type-arg]
        def charge() -> Decimal:
            charges.append(ctx.attempt)
            return Decimal("99.95")

        receipt = ctx.once("charge", charge)
        seen.append(receipt)
        if ctx.attempt == 1:
            raise RuntimeError("the email failed after the charge")
        return f"paid {receipt}"

    @app.job(max_attempts=1)
    async def tagged(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        await ctx.aonce("tags", lambda: {"a"})

    paid, failed = pay.enqueue({}), tagged.enqueue({})
    with running_worker(app):
        wait_until(lambda: finished(app, paid) and finished(app, failed), message="both jobs to finish")
    assert charges == [1]  # charged once
    assert seen == [Decimal("99.95"), "99.95"]  # the retry reads the stored receipt, as JSON text
    assert app.admin.jobs.get(paid).result == "paid 99.95"
    dead = app.admin.jobs.get(failed)
    assert dead.state is JobState.DEAD and dead.errors[-1].error.startswith("ResultError: a set cannot be stored as JSON")


def test_failed_runs_are_logged_with_their_traceback_at_warning_and_dead_at_error(app: Conveyor, caplog: pytest.LogCaptureFixture) -> None:
    @app.job(max_attempts=2, backoff=0.01)
    def flaky(p: dict) -> None:  # type: ignore[type-arg]
        raise ValueError("card declined")

    job_id = flaky.enqueue({})
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"), running_worker(app):
        wait_until(lambda: finished(app, job_id), message="the job to die")
    failures = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    assert [(r.levelno, r.attempt) for r in failures] == [(logging.WARNING, 1), (logging.ERROR, 2)]  # type: ignore[attr-defined]
    for record in failures:
        text = record.getMessage()
        assert "ValueError: card declined" in text and "Traceback (most recent call last)" in text and 'raise ValueError("card declined")' in text


def test_encoding_follows_pydantic_and_refuses_what_has_no_json_form() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert encode_result({"id": ident, "colour": Colour.RED, "items": (1, 2)}, 1000) == '{"id":"12345678-1234-5678-1234-567812345678","colour":"red","items":[1,2]}'
    assert encode_result(None, 10) is None
    with pytest.raises(ResultError, match="conveyor_test_Widget|Widget"):
        encode_result(Widget(), 1000)
    with pytest.raises(ResultError, match="cannot be stored as JSON"):
        encode_result(float("nan"), 1000)
    with pytest.raises(ResultError, match="frozenset"):
        encode_result([frozenset({1})], 1000)


class Widget:
    """An object pydantic has no JSON form for."""


def test_the_old_name_once_async_still_works_and_warns(app: Conveyor) -> None:
    @app.job()
    async def old_style(p: dict, ctx: JobContext) -> list[object]:  # type: ignore[type-arg]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = await ctx.once_async("step", lambda: Decimal("1.5"))
        return [str(w.message) for w in caught if w.category is DeprecationWarning] + [value]

    job_id = old_style.enqueue({})
    with running_worker(app):
        wait_until(lambda: finished(app, job_id), message="the job to finish")
    assert app.admin.jobs.get(job_id).result == ["ctx.once_async is deprecated and goes in the next release; use ctx.aonce", "1.5"]
