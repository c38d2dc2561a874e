"""The life of a run on the backend: claim, complete, fail, lease, release, rescue, fencing."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, JobState, Selection
from conveyor.backends.base import ClaimParams, FinishParams, Lease, NewJob
from conveyor.job import Job
from conveyor.testing import wait_until
from tests.contract.jobs import declare


@pytest.fixture(autouse=True)
def _jobs(app: Conveyor) -> None:
    declare(app)


def claim(app: Conveyor, n: int = 10, queues: tuple[str, ...] = ("default",), lease: float = 30.0, worker: str = "w1") -> list[Job]:
    return app.backend.jobs_claim(ClaimParams(worker, queues, n, lease))


def lease_of(job: Job) -> Lease:
    return Lease(job.id, job.lease_token)


def test_claim_takes_highest_priority_first_then_fifo(app: Conveyor) -> None:
    low = app.enqueue("plain", {"n": "low"}, priority=-5)
    a = app.enqueue("plain", {"n": "a"})
    high = app.enqueue("plain", {"n": "high"}, priority=10)
    b = app.enqueue("plain", {"n": "b"})
    assert [j.id for j in claim(app, 3)] == [high, a, b]
    assert [j.id for j in claim(app, 3)] == [low]
    assert claim(app, 3) == []


def test_claim_marks_running_with_worker_lease_and_attempt(app: Conveyor) -> None:
    job_id = app.enqueue("plain", {})
    (job,) = claim(app, worker="worker-7", lease=30)
    assert job.id == job_id and job.state is JobState.RUNNING
    assert job.worker_id == "worker-7" and job.attempt == 1 and job.lease_token == 1
    assert job.lease_expires_at is not None and job.attempted_at is not None
    assert 29 < (job.lease_expires_at - job.attempted_at).total_seconds() < 31
    assert app.admin.jobs.get(job_id).state is JobState.RUNNING


def test_claim_reads_only_the_given_queues(app: Conveyor) -> None:
    app.enqueue("plain", {})
    order = app.enqueue("process_order", {"order_id": "o", "email": "e"})
    email = app.enqueue("send_email", {})
    assert [j.id for j in claim(app, 10, queues=("orders", "email"))] == [email, order]  # email has priority 5
    assert len(claim(app, 10, queues=("default",))) == 1


def test_scheduled_jobs_are_claimed_only_when_due(app: Conveyor) -> None:
    job_id = app.enqueue("plain", {}, delay=0.4)
    assert claim(app) == []
    (job,) = wait_until(lambda: claim(app), timeout=5)
    assert job.id == job_id


def test_complete_is_final_and_keeps_the_result(app: Conveyor) -> None:
    app.enqueue("plain", {})
    (job,) = claim(app)
    assert app.backend.jobs_finish([FinishParams(lease_of(job), JobState.COMPLETED, result='{"pdf": "/x.pdf"}')]) == [job.id]
    done = app.admin.jobs.get(job.id)
    assert done.state is JobState.COMPLETED and done.result == {"pdf": "/x.pdf"}
    assert done.finished_at is not None and done.worker_id is None and done.lease_expires_at is None


def test_fail_reschedules_with_backoff_keeping_every_error_then_dead(app: Conveyor) -> None:
    job_id = app.enqueue("plain", {})  # max_attempts=2
    (job,) = claim(app)
    app.backend.jobs_finish([FinishParams(lease_of(job), JobState.PENDING, delay=60, error="E1", traceback="tb1", worker_id="w1")])
    retrying = app.admin.jobs.get(job_id)
    assert retrying.state is JobState.SCHEDULED and retrying.attempt == 1
    assert 59 < (retrying.run_at - app.now()).total_seconds() < 61
    app.backend.jobs_finish([FinishParams(lease_of(job), JobState.COMPLETED)])  # stale: ignored
    assert app.admin.jobs.get(job_id).state is JobState.SCHEDULED
    app.admin.dead_letters.retry(Selection.matching(state="dead"), actor="test")  # not dead: untouched
    # make it due again by a zero-delay failure path: run it now
    app.backend.jobs_release([])  # no-op
    app.admin.jobs.cancel(job_id, actor="test")
    app.admin.jobs.retry(job_id, actor="test")  # cancelled -> pending with fresh attempts
    (again,) = claim(app)
    assert again.attempt == 1 and again.lease_token == 2
    app.backend.jobs_finish([FinishParams(lease_of(again), JobState.DEAD, error="E2", traceback="tb2", worker_id="w1")])
    dead = app.admin.jobs.get(job_id)
    assert dead.state is JobState.DEAD and dead.finished_at is not None
    assert [e.error for e in dead.errors] == ["E1", "cancelled", "E2"]
    assert dead.errors[0].traceback == "tb1" and dead.errors[0].worker_id == "w1" and dead.errors[0].attempt == 1


def test_a_batch_with_a_stale_lease_writes_the_others_once_and_returns_only_their_ids(app: Conveyor) -> None:
    for n in range(3):
        app.enqueue("plain", {"n": n})
    first, second, third = claim(app, 3)
    app.backend.jobs_release([lease_of(second)])
    (second_again,) = claim(app, 1)  # a newer run holds it: the batch's lease for it is stale
    outcomes = [FinishParams(lease_of(j), JobState.PENDING, delay=60, error="E1", worker_id="w1") for j in (first, second, third)]
    assert sorted(app.backend.jobs_finish(outcomes)) == sorted([first.id, third.id])
    for job in (first, third):
        assert [e.error for e in app.admin.jobs.get(job.id).errors] == ["E1"]  # written once, not once per try
    untouched = app.admin.jobs.get(second.id)
    assert untouched.state is JobState.RUNNING and untouched.lease_token == second_again.lease_token and untouched.errors == ()


def test_zero_delay_retry_is_immediately_claimable(app: Conveyor) -> None:
    app.enqueue("plain", {})
    (job,) = claim(app)
    app.backend.jobs_finish([FinishParams(lease_of(job), JobState.PENDING, delay=0, error="flaky")])
    (again,) = claim(app)
    assert again.id == job.id and again.attempt == 2


def test_writes_with_a_stale_lease_token_are_ignored(app: Conveyor) -> None:
    app.enqueue("plain", {})
    (first,) = claim(app, lease=0.0)  # expires at once
    assert app.backend.jobs_rescue() == [first.id]
    (second,) = claim(app, worker="w2")
    assert second.lease_token == first.lease_token + 1
    assert app.backend.jobs_finish([FinishParams(lease_of(first), JobState.COMPLETED, children=(NewJob("plain", "{}"),))]) == []
    assert app.backend.leases_renew([lease_of(first)], 30) == []
    assert app.backend.jobs_release([lease_of(first)]) == 0
    assert app.backend.mark_put(lease_of(first), "step", None) is False
    assert app.admin.jobs.get(second.id).state is JobState.RUNNING
    assert app.admin.jobs.count() == 1  # the stale run's child was not inserted
    assert app.backend.jobs_finish([FinishParams(lease_of(second), JobState.COMPLETED)]) == [second.id]


def test_lease_renewal_extends_only_held_leases(app: Conveyor) -> None:
    app.enqueue("plain", {})
    (job,) = claim(app, lease=1.0)
    assert app.backend.leases_renew([lease_of(job)], 60) == [job.id]
    renewed = app.admin.jobs.get(job.id)
    assert renewed.lease_expires_at is not None
    assert (renewed.lease_expires_at - app.now()).total_seconds() > 55
    assert app.backend.jobs_rescue() == []


def test_release_returns_the_job_without_counting_an_attempt(app: Conveyor) -> None:
    app.enqueue("plain", {})
    (job,) = claim(app)
    assert app.backend.jobs_release([lease_of(job)]) == 1
    released = app.admin.jobs.get(job.id)
    assert released.state is JobState.PENDING and released.attempt == 0 and released.worker_id is None
    (again,) = claim(app)
    assert again.attempt == 1


def test_rescue_counts_the_lost_run_and_dead_letters_when_spent(app: Conveyor) -> None:
    job_id = app.enqueue("plain", {})  # max_attempts=2
    claim(app, lease=0.0)
    assert app.backend.jobs_rescue() == [job_id]
    lost = app.admin.jobs.get(job_id)
    assert lost.state is JobState.PENDING and lost.attempt == 1
    assert "worker lost" in lost.errors[-1].error
    claim(app, lease=0.0)
    assert app.backend.jobs_rescue() == [job_id]
    dead = app.admin.jobs.get(job_id)
    assert dead.state is JobState.DEAD and len(dead.errors) == 2


def test_progress_and_marks_are_fenced_by_the_lease(app: Conveyor) -> None:
    app.enqueue("plain", {})
    (job,) = claim(app)
    assert app.backend.job_progress(lease_of(job), '{"done": 3, "of": 10}') is True
    assert app.admin.jobs.get(job.id).progress == {"done": 3, "of": 10}
    assert app.backend.mark_get(job.id, "charge") == (False, None)
    assert app.backend.mark_put(lease_of(job), "charge", '"ch_1"') is True
    assert app.backend.mark_put(lease_of(job), "charge", '"ch_2"') is False
    found, value = app.backend.mark_get(job.id, "charge")
    assert found and value is not None and value.replace(" ", "") == '"ch_1"'
