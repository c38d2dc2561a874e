"""Property test: random interleavings of enqueue, claim, complete, fail, rescue keep the invariants.

No job is lost, none is in two states, claims follow priority then FIFO, stale writes change nothing.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conveyor import Conveyor, JobState
from conveyor.backends.base import ClaimParams, FinishParams, Lease
from tests.conftest import PG_URL, pg_schema_url, require_postgres


@dataclass
class Model:
    state: JobState
    priority: int
    max_attempts: int
    attempt: int = 0
    token: int = 0
    expired: bool = False


class QueueMachine(RuleBasedStateMachine):
    backend_name = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.schema: str | None = None
        if self.backend_name == "sqlite":
            url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'q.db'}"
        else:
            require_postgres()
            self.schema = f"h_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {self.schema}")
            url = pg_schema_url(self.schema)
        self.app = Conveyor(url)

        @self.app.job()
        def m(p: dict) -> None:  # type: ignore[type-arg]
            return None

        self.jobs: dict[int, Model] = {}

    def teardown(self) -> None:
        self.app.close()
        if self.schema:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")

    def running(self) -> list[int]:
        return sorted(i for i, j in self.jobs.items() if j.state is JobState.RUNNING)

    @rule(priority=st.integers(-2, 2), max_attempts=st.integers(1, 3), count=st.integers(1, 3))
    def enqueue(self, priority: int, max_attempts: int, count: int) -> None:
        ids = self.app.enqueue_many([("m", {}) for _ in range(count)], priority=priority, max_attempts=max_attempts)
        for job_id in ids:
            assert job_id not in self.jobs
            self.jobs[job_id] = Model(JobState.PENDING, priority, max_attempts)

    @rule(n=st.integers(1, 5), expired=st.booleans())
    def claim(self, n: int, expired: bool) -> None:
        due = sorted((i for i, j in self.jobs.items() if j.state is JobState.PENDING), key=lambda i: (-self.jobs[i].priority, i))
        got = self.app.backend.jobs_claim(ClaimParams("w", ("default",), n, 0.0 if expired else 300.0))
        assert [j.id for j in got] == due[:n]
        for job in got:
            model = self.jobs[job.id]
            model.state, model.attempt, model.expired = JobState.RUNNING, model.attempt + 1, expired
            model.token += 1
            assert job.attempt == model.attempt and job.lease_token == model.token

    @precondition(lambda self: self.running())
    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        job_id = data.draw(st.sampled_from(self.running()))
        model = self.jobs[job_id]
        if ok:
            state = JobState.COMPLETED
        else:
            state = JobState.DEAD if model.attempt >= model.max_attempts else JobState.PENDING
        won = self.app.backend.jobs_finish([FinishParams(Lease(job_id, model.token), state, error=None if ok else "err")])
        assert won == [job_id]
        model.state = state

    @precondition(lambda self: any(j.token for j in self.jobs.values()))
    @rule(data=st.data())
    def stale_write(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(i for i, j in self.jobs.items() if j.token)))
        stale = Lease(job_id, self.jobs[job_id].token - 1)
        assert self.app.backend.jobs_finish([FinishParams(stale, JobState.COMPLETED)]) == []
        assert self.app.backend.leases_renew([stale], 300) == []

    @rule()
    def rescue(self) -> None:
        lost = sorted(i for i, j in self.jobs.items() if j.state is JobState.RUNNING and j.expired)
        assert sorted(self.app.backend.jobs_rescue()) == lost
        for job_id in lost:
            model = self.jobs[job_id]
            model.state = JobState.DEAD if model.attempt >= model.max_attempts else JobState.PENDING

    @invariant()
    def store_matches_model(self) -> None:
        if not self.jobs:
            return
        stored = {j.id: j for j in self.app.admin.jobs.list(limit=10_000)}
        assert sorted(stored) == sorted(self.jobs), "a job was lost or invented"
        for job_id, model in self.jobs.items():
            assert stored[job_id].state is model.state, job_id
            assert stored[job_id].attempt == model.attempt


class PostgresQueueMachine(QueueMachine):
    backend_name = "postgres"


QueueMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck))
PostgresQueueMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck))
TestSQLiteInvariants = QueueMachine.TestCase
TestPostgresInvariants = PostgresQueueMachine.TestCase

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
