"""The fast row-to-Job constructor gives the same frozen record as Job's own constructor."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from conveyor.job import FailedAttempt, Job, JobState, job_from_fields


def sample() -> Job:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    return Job(
        id=7, type="send", queue="email", state=JobState.RUNNING, payload={"to": "a@b.c"}, priority=10, attempt=2,
        max_attempts=5, run_at=at, created_at=at, attempted_at=at, finished_at=None, lease_token=3, lease_expires_at=at,
        worker_id="w-1", timeout=30.0, unique_key="k", workflow_id="wf", parent_id=1, progress={"done": 1},
        result=None, errors=(FailedAttempt(1, at, "boom"),), backoff="fixed:1", corrupt=None,
    )  # fmt: skip


def test_built_from_its_fields_it_equals_the_constructed_job() -> None:
    job = sample()
    built = job_from_fields([getattr(job, f.name) for f in dataclasses.fields(Job)])
    assert type(built) is Job
    assert built == job
    assert repr(built) == repr(job)


def test_the_built_job_is_frozen() -> None:
    built = job_from_fields([getattr(sample(), f.name) for f in dataclasses.fields(Job)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.state = JobState.DEAD  # type: ignore[misc]
    assert dataclasses.replace(built, state=JobState.DEAD).state is JobState.DEAD
