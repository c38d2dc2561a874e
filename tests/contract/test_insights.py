"""The Insights seam on both backends: stats snapshots, audit log, retention, workers, workflows."""

from __future__ import annotations

import threading
from datetime import timedelta

from conveyor import Conveyor, JobContext, JobState, Selection
from conveyor.backends.base import WorkerInfo
from conveyor.backends.insights import NewAuditEntry, PruneParams, SnapshotParams
from conveyor.stats import HealthStatus
from conveyor.testing import running_worker, wait_until


def declare(app: Conveyor) -> None:
    @app.job(queue="email", max_attempts=1)
    def ok(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job(queue="billing", max_attempts=1)
    def boom(p: dict) -> None:  # type: ignore[type-arg]
        raise RuntimeError("card declined")


def run_all(app: Conveyor, completed: int, dead: int) -> None:
    with running_worker(app):
        wait_until(
            lambda: app.admin.jobs.count(state=JobState.COMPLETED) == completed and app.admin.jobs.count(state=JobState.DEAD) == dead,
            message=f"{completed} completed and {dead} dead",
        )


def test_snapshot_counts_throughput_and_durations(app: Conveyor) -> None:
    declare(app)
    app.enqueue_many([("ok", {"i": i}) for i in range(6)])
    app.enqueue_many([("boom", {"i": i}) for i in range(2)])
    run_all(app, 6, 2)
    app.enqueue("ok", {"late": True}, delay=timedelta(hours=1))
    app.enqueue("ok", {"waiting": True}, queue="idle")

    snap = app.insights.stats_snapshot(SnapshotParams(window=900, bucket=10))
    counts = {(s.queue, s.type, s.state): s.count for s in snap.states}
    assert counts[("email", "ok", JobState.COMPLETED)] == 6
    assert counts[("billing", "boom", JobState.DEAD)] == 2
    assert counts[("email", "ok", JobState.SCHEDULED)] == 1
    assert counts[("idle", "ok", JobState.PENDING)] == 1
    assert sum(f.count for f in snap.finished if f.state is JobState.COMPLETED) == 6
    assert all(0 <= f.bucket < 90 for f in snap.finished)
    assert [(p.queue, p.count) for p in snap.pending] == [("idle", 1)]
    assert len(snap.durations) == 6 and all(d.run >= 0 and d.wait >= 0 for d in snap.durations)

    stats = app.admin.stats()
    email = next(q for q in stats.queues if q.queue == "email")
    billing = next(q for q in stats.queues if q.queue == "billing")
    assert email.completed == {"1m": 6, "5m": 6, "15m": 6}
    assert billing.dead["15m"] == 2 and billing.failure_rate == 1.0
    assert email.run_time.samples == 6 and email.run_time.p95 is not None
    assert stats.total.counts["dead"] == 2 and stats.total.failure_rate == 2 / 8
    assert sum(p.completed for p in stats.series) == 6 and len(stats.series) == 90


def test_health_degrades_on_dead_growth_old_pending_and_no_worker(database_url: str) -> None:
    app = Conveyor(database_url, health_dead_growth=1, health_pending_age=3600.0, poll_interval=0.05)
    try:
        declare(app)
        assert app.admin.health().status is HealthStatus.OK
        app.enqueue("ok", {}, queue="orphan")  # due, and nobody serves "orphan"
        health = app.admin.health()
        assert health.status is HealthStatus.DEGRADED
        assert [c.name for c in health.checks if not c.ok] == ["workers:orphan"]
        app.admin.jobs.cancel(Selection.matching(queue="orphan"), actor="test")
        app.enqueue_many([("boom", {}), ("boom", {})])
        run_all(app, 0, 2)
        failing = [c.name for c in app.admin.health().checks if not c.ok]
        assert "dead_letter_growth" in failing
    finally:
        app.close()


def test_pending_age_counts_due_scheduled_jobs(database_url: str) -> None:
    app = Conveyor(database_url, health_pending_age=1.0)
    try:
        declare(app)
        app.enqueue("ok", {}, run_at=app.now() - timedelta(minutes=5))  # overdue, never staged by a worker
        stats = app.admin.stats()
        email = next(q for q in stats.queues if q.queue == "email")
        assert email.oldest_pending_age is not None and email.oldest_pending_age >= 299
        assert any(c.name == "pending_age:email" and not c.ok for c in stats.health.checks)
    finally:
        app.close()


def test_audit_log_records_and_pages(app: Conveyor) -> None:
    ids = [app.insights.audit_record(NewAuditEntry("ops", "dlq.retry", f"job:{i}", {"count": i})) for i in range(5)]
    assert ids == sorted(ids)
    entries = app.admin.audit.list(limit=3)
    assert [e.target for e in entries] == ["job:4", "job:3", "job:2"]
    assert entries[0].actor == "ops" and entries[0].detail == {"count": 4}
    assert [e.target for e in app.admin.audit.list(limit=10, before_id=entries[-1].id)] == ["job:1", "job:0"]


def test_prune_by_age_keeps_dead_and_unfinished(app: Conveyor) -> None:
    declare(app)
    app.enqueue_many([("ok", {"i": i}) for i in range(7)])
    app.enqueue("boom", {})
    run_all(app, 7, 1)
    app.enqueue("ok", {"later": 1}, delay=timedelta(hours=1))
    cancelled = app.enqueue("ok", {"x": 1}, delay=timedelta(hours=1))
    app.admin.jobs.cancel(cancelled, actor="test")
    finished = app.admin.jobs.get(cancelled).finished_at
    assert finished is not None
    wait_until(lambda: app.now() > finished, message="the database clock to pass the cancel")

    assert app.admin.prunable(PruneParams(completed_older_than=3600.0)) == 0
    assert app.admin.prune(PruneParams(completed_older_than=3600.0, limit=2), actor="test") == 0
    policy = PruneParams(completed_older_than=0.0, cancelled_older_than=0.0, limit=3)
    assert app.admin.prunable(policy) == 8
    batches: list[int] = []
    assert app.admin.prune(policy, on_batch=batches.append, actor="test") == 8
    assert batches == [3, 3, 2]
    assert app.admin.jobs.count(state=JobState.COMPLETED) == 0 and app.admin.jobs.count(state=JobState.CANCELLED) == 0
    assert app.admin.jobs.count(state=JobState.DEAD) == 1 and app.admin.jobs.count(state=JobState.SCHEDULED) == 1


def test_prune_keeps_newest_n_per_type(app: Conveyor) -> None:
    declare(app)

    @app.job(queue="email", max_attempts=1)
    def other(p: dict) -> None:  # type: ignore[type-arg]
        return None

    app.enqueue_many([("ok", {"i": i}) for i in range(9)] + [("other", {"i": i}) for i in range(2)])
    run_all(app, 11, 0)
    policy = PruneParams(keep_completed_per_type=3, limit=4)
    assert app.admin.prunable(policy) == 6
    newest_ok = sorted(j.id for j in app.admin.jobs.list(type="ok"))[-3:]
    assert app.admin.prune(policy, actor="test") == 6
    assert sorted(j.id for j in app.admin.jobs.list(type="ok")) == newest_ok
    assert app.admin.jobs.count(type="other") == 2
    assert app.admin.prune(policy, actor="test") == 0


def test_forget_silent_workers_and_recent_workflows(app: Conveyor) -> None:
    declare(app)
    app.backend.workers_heartbeat(WorkerInfo("w-old", "host", 1, ("email",), 4))
    assert app.admin.workers.forget(older_than=3600.0, actor="test") == 0
    wait_until(lambda: app.now() > app.admin.workers.list()[0].heartbeat_at, message="the clock to move")  # type: ignore[operator]
    assert app.admin.workers.forget(older_than=0.0, actor="test") == 1 and app.admin.workers.list() == []

    app.enqueue_many([("ok", {"i": 1}), ("ok", {"i": 2})], workflow_id="wf-a")
    app.enqueue("boom", {}, workflow_id="wf-b")
    run_all(app, 2, 1)
    flows = {w.workflow_id: w for w in app.admin.workflows.list()}
    assert list(flows) == ["wf-b", "wf-a"]
    assert flows["wf-a"].states == {"completed": 2} and flows["wf-a"].finished_at is not None
    assert flows["wf-b"].states == {"dead": 1}


def test_workers_prune_on_their_own_schedule(database_url: str) -> None:
    app = Conveyor(database_url, retain_completed=0.001, prune_interval=0.2, poll_interval=0.05)
    try:
        declare(app)
        app.enqueue_many([("ok", {"i": i}) for i in range(5)] + [("boom", {})])
        with running_worker(app):
            wait_until(lambda: app.admin.jobs.count(state=JobState.DEAD) == 1, message="the failing job to die")
            wait_until(lambda: app.admin.jobs.count() == 1, timeout=15, message="the pruner to remove completed jobs")
        assert app.admin.jobs.count(state=JobState.DEAD) == 1  # the DLQ is never pruned
    finally:
        app.close()


def test_prune_keeps_the_parents_of_a_waiting_fan_in(app: Conveyor) -> None:
    """Retention (per type, or by age) never removes a result a waiting child has yet to read."""
    release = threading.Event()
    seen: list[int] = []

    @app.job(max_attempts=1)
    def part(p: dict) -> int:  # type: ignore[type-arg]
        if p["slow"]:
            release.wait(60)
        return int(p["i"])

    @app.job(max_attempts=1)
    def join(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        seen.append(len(ctx.parent_results()))

    parents = [app.enqueue("part", {"i": i, "slow": i == 49}) for i in range(50)]
    child = app.enqueue("join", {}, depends_on=parents)
    policy = PruneParams(keep_completed_per_type=5, completed_older_than=0.0, limit=10)
    with running_worker(app):
        try:
            wait_until(lambda: app.admin.jobs.count(type="part", state=JobState.COMPLETED) == 49, message="the 49 fast parents")
            assert app.admin.prunable(policy) == 0
            assert app.admin.prune(policy, actor="test") == 0
            assert app.admin.jobs.count(type="part", state=JobState.COMPLETED) == 49
        finally:
            release.set()
        wait_until(lambda: app.admin.jobs.get(child).state is JobState.COMPLETED, message="the fan-in callback")
    assert seen == [50]
    assert app.admin.prune(PruneParams(keep_completed_per_type=5, limit=100), actor="test") == 45  # read: now they may go
