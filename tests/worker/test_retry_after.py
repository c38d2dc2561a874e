"""A failure that says how long to wait (a webhook answered 429/503 with Retry-After) is retried
no sooner than that, and the attempt counts — through a real worker and a real HTTP receiver."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Job, JobState
from conveyor.outcome import MAX_ASKED_WAIT
from conveyor.testing import running_worker, wait_until
from conveyor.webhooks import deliver
from tests.receiver import ReceiverServer, url_of


def first_failure(app: Conveyor, receiver: ReceiverServer, backoff: float) -> Job:
    """Run a job that delivers one webhook to ``receiver`` until its first attempt failed."""

    @app.job(max_attempts=3, backoff=backoff)
    def notify(p: dict) -> None:  # type: ignore[type-arg]
        deliver(url_of(receiver), "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=", p, msg_id="msg_1", allow_private=True)

    job_id = app.enqueue("notify", {"order": 1})
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(job_id).state is JobState.SCHEDULED)
    return app.admin.jobs.get(job_id)


@pytest.mark.parametrize(("header", "expected"), [("120", 120.0), ("9999999", MAX_ASKED_WAIT)])
def test_a_webhook_answering_503_with_retry_after_is_retried_after_that_wait(
    app: Conveyor, receiver: ReceiverServer, header: str, expected: float
) -> None:
    receiver.answers.append((503, {"Retry-After": header}))
    job = first_failure(app, receiver, backoff=1)
    assert job.attempt == 1 and len(job.errors) == 1
    assert job.errors[0].error.startswith("WebhookDeliveryError") and "HTTP 503" in job.errors[0].error
    wait = (job.run_at - job.errors[0].at).total_seconds()  # from the failure itself, not from whenever this reads it
    assert expected - 5 < wait <= expected + 0.001  # the answer's wait, not the 1 s backoff; capped at a day
    assert len(receiver.received) == 1


def test_a_failure_without_an_asked_wait_keeps_its_backoff(app: Conveyor, receiver: ReceiverServer) -> None:
    receiver.answers.append((500, {}))
    job = first_failure(app, receiver, backoff=30)
    wait = (job.run_at - job.errors[0].at).total_seconds()
    assert 25 < wait <= 30.001  # (SQLite keeps times as float seconds)
