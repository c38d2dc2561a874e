"""The dead-letter queue and steering: list, inspect, retry one or many, purge, cancel, query."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, InvalidTransition, JobNotFound, JobState, Selection
from conveyor.backends.base import ClaimParams, FinishParams, Lease
from tests.contract.jobs import declare


@pytest.fixture(autouse=True)
def _jobs(app: Conveyor) -> None:
    declare(app)


def kill(app: Conveyor, job_type: str, payload: dict[str, object], error: str = "boom") -> int:
    """Enqueue a job and run it into the dead-letter queue."""
    spec = app.registry.get(job_type)
    job_id = app.enqueue(job_type, payload)
    (job,) = [j for j in app.backend.jobs_claim(ClaimParams("w", (spec.options.queue,), 100, 30)) if j.id == job_id]
    app.backend.jobs_finish([FinishParams(Lease(job.id, job.lease_token), JobState.DEAD, error=error, traceback=f"Traceback: {error}")])
    return job_id


def test_dead_letters_list_and_inspect(app: Conveyor) -> None:
    first = kill(app, "plain", {"n": 1}, "ValueError: bad")
    second = kill(app, "send_email", {"to": "x"}, "SMTPError: 550")
    app.enqueue("plain", {"n": 3})
    dead = app.admin.dead_letters.list()
    assert [j.id for j in dead] == [second, first]
    job = app.admin.jobs.get(first)
    assert job.payload == {"n": 1}
    assert job.last_error is not None and job.last_error.error == "ValueError: bad"
    assert job.last_error.traceback == "Traceback: ValueError: bad"
    assert [j.id for j in app.admin.dead_letters.list(type="send_email")] == [second]


def test_retry_one_gives_fresh_attempts(app: Conveyor) -> None:
    job_id = kill(app, "plain", {})
    app.admin.jobs.retry(job_id, actor="test")
    job = app.admin.jobs.get(job_id)
    assert job.state is JobState.PENDING and job.attempt == 0 and job.finished_at is None
    assert len(job.errors) == 1  # the history stays
    with pytest.raises(InvalidTransition):
        app.admin.jobs.retry(job_id, actor="test")  # pending now: nothing to retry


def test_retry_many_by_filter(app: Conveyor) -> None:
    plain = [kill(app, "plain", {"n": i}) for i in range(3)]
    email = kill(app, "send_email", {})
    assert app.admin.dead_letters.retry(Selection.matching(type="plain"), actor="test") == 3
    assert {app.admin.jobs.get(i).state for i in plain} == {JobState.PENDING}
    assert app.admin.jobs.get(email).state is JobState.DEAD
    assert app.admin.dead_letters.retry(Selection.every(), actor="test") == 1


def test_purge_deletes_only_finished_matching_jobs(app: Conveyor) -> None:
    dead = [kill(app, "plain", {"n": i}) for i in range(3)]
    live = app.enqueue("plain", {})
    assert app.admin.dead_letters.purge(Selection.of([dead[0]]), actor="test") == 1
    with pytest.raises(JobNotFound):
        app.admin.jobs.get(dead[0])
    assert app.admin.dead_letters.purge(Selection.every(), actor="test") == 2
    assert app.admin.jobs.purge(Selection.matching(state="pending"), actor="test") == 0  # never deletes unfinished jobs
    assert app.admin.jobs.get(live).state is JobState.PENDING


def test_cancel_a_job_that_has_not_started(app: Conveyor) -> None:
    pending = app.enqueue("plain", {})
    scheduled = app.enqueue("plain", {}, delay=3600)
    app.admin.jobs.cancel(pending, actor="test")
    app.admin.jobs.cancel(scheduled, actor="test")
    assert app.admin.jobs.get(pending).state is JobState.CANCELLED
    assert app.admin.jobs.get(scheduled).state is JobState.CANCELLED
    running = app.enqueue("plain", {})
    (claimed,) = app.backend.jobs_claim(ClaimParams("w", ("default",), 10, 30))
    app.admin.jobs.cancel(running, actor="test")  # a running job is stopped too (issue 16); its lease no longer holds
    assert app.admin.jobs.get(running).state is JobState.CANCELLED
    assert app.backend.leases_renew([Lease(running, claimed.lease_token)], 30) == []
    with pytest.raises(InvalidTransition, match="cancelled"):
        app.admin.jobs.cancel(running, actor="test")
    with pytest.raises(JobNotFound):
        app.admin.jobs.cancel(999_999, actor="test")


def test_query_by_state_queue_type_and_page(app: Conveyor) -> None:
    ids = [app.enqueue("plain", {"n": i}) for i in range(5)]
    email = app.enqueue("send_email", {})
    assert app.admin.jobs.count(state="pending") == 6
    assert app.admin.jobs.count(queue="email") == 1
    assert [j.id for j in app.admin.jobs.list(type="plain", limit=2)] == [ids[4], ids[3]]
    assert [j.id for j in app.admin.jobs.list(type="plain", limit=2, before_id=ids[3])] == [ids[2], ids[1]]
    assert [j.id for j in app.admin.jobs.list(queue=["email"], state=["pending", "running"])] == [email]
    with pytest.raises(ValueError):
        app.admin.jobs.list(state="exploded")


def test_filter_values_never_reach_sql_as_text(app: Conveyor) -> None:
    app.enqueue("plain", {})
    hostile = "x' OR '1'='1"
    assert app.admin.jobs.list(type=hostile) == []
    assert app.admin.jobs.list(queue=[hostile, "default); DROP TABLE conveyor_jobs; --"]) == []
    assert app.admin.jobs.count() == 1
