"""Error reporting: failed runs reach a logger with traceback and job fields, and Sentry through its logging integration (fake transport) — both backends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger
from sentry_sdk.transport import Transport

from conveyor import Conveyor, JobState
from conveyor.contrib.reporting import ErrorReporter
from conveyor.testing import running_worker, wait_until


def declare(app: Conveyor) -> None:
    @app.job(queue="payments", max_attempts=2, backoff=0)
    def charge(p: dict[str, Any]) -> None:
        raise ConnectionRefusedError(f"gateway down for {p['order']}")

    @app.job(max_attempts=1, timeout=0.2)
    async def slow(p: dict[str, Any]) -> None:
        import asyncio

        await asyncio.sleep(30)

    @app.job()
    def fine(p: dict[str, Any]) -> None:
        return None


def test_failed_runs_are_logged_with_traceback_and_job_fields(app: Conveyor, caplog: pytest.LogCaptureFixture) -> None:
    declare(app)
    app.use(ErrorReporter())
    charge = app.enqueue("charge", {"order": "o1"})
    slow = app.enqueue("slow", {})
    app.enqueue("fine", {})
    with caplog.at_level(logging.WARNING, logger="conveyor.errors"), running_worker(app):
        wait_until(lambda: app.admin.jobs.get(charge).state is JobState.DEAD and app.admin.jobs.get(slow).state is JobState.DEAD, timeout=60)
        wait_until(lambda: len([r for r in caplog.records if r.name == "conveyor.errors"]) == 3, timeout=60)
    records = [r for r in caplog.records if r.name == "conveyor.errors"]
    retry, dead = [r for r in records if getattr(r, "job_type", None) == "charge"]
    assert (retry.levelno, retry.attempt, retry.outcome) == (logging.WARNING, 1, "retry")  # type: ignore[attr-defined]
    assert (dead.levelno, dead.attempt, dead.outcome, dead.queue, dead.job_id) == (logging.ERROR, 2, "dead", "payments", charge)  # type: ignore[attr-defined]
    assert dead.exc_info is not None and dead.exc_info[0] is ConnectionRefusedError
    assert "gateway down for o1" in dead.getMessage()
    assert "Traceback" in caplog.text and "raise ConnectionRefusedError" in caplog.text
    (timeout,) = [r for r in records if getattr(r, "job_type", None) == "slow"]
    assert timeout.levelno == logging.ERROR and "timed out after 0.2 s" in timeout.getMessage() and timeout.exc_info is None


class CapturingTransport(Transport):
    """Sentry's transport, kept in memory: no network."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [item.payload.json for env in self.envelopes for item in env.items if item.type == "event" and item.payload.json]


@pytest.fixture
def sentry() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    sentry_sdk.init(
        dsn="https://public@sentry.example.invalid/1",
        transport=transport,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        default_integrations=False,
    )
    ignore_logger("conveyor.worker")  # its per-run line (ERROR when dead) would be a second, traceback-less event
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to no client


def test_sentry_receives_dead_jobs_as_events_through_its_logging_integration(app: Conveyor, sentry: CapturingTransport) -> None:
    declare(app)
    app.use(ErrorReporter())
    charge = app.enqueue("charge", {"order": "o2"})
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(charge).state is JobState.DEAD, timeout=60)
        wait_until(lambda: sentry.events(), message="the Sentry event", timeout=60)
    (event,) = sentry.events()  # the retried attempt (WARNING) is below event_level: no event
    assert event["level"] == "error" and event["logger"] == "conveyor.errors"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "ConnectionRefusedError" and exception["value"] == "gateway down for o2"
    assert any(frame["function"] == "charge" for frame in exception["stacktrace"]["frames"])
    assert {k: event["extra"][k] for k in ("job_id", "job_type", "queue", "attempt")} == {
        "job_id": charge, "job_type": "charge", "queue": "payments", "attempt": 2,
    }  # fmt: skip
