"""Stats shaping without a database: windows, percentiles, series and health rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.backends.base import WorkerInfo
from conveyor.backends.insights import Duration, FinishedBucket, PendingAge, Snapshot, SnapshotParams, StateCount
from conveyor.job import JobState
from conveyor.stats import HealthStatus, Thresholds, percentiles, shape

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def snapshot(**parts: object) -> Snapshot:
    values = {"states": (), "finished": (), "pending": (), "durations": ()} | parts
    return Snapshot(NOW, SnapshotParams(window=900, bucket=10), **values)  # type: ignore[arg-type]


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]).p50 is None
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p.p50, p.p95, p.samples) == (50.0, 95.0, 100)
    assert percentiles([3.0]).p95 == 3.0


def test_windows_count_only_their_buckets() -> None:
    finished = (
        FinishedBucket(89, "q", "t", JobState.COMPLETED, 4),  # the last 10 s
        FinishedBucket(84, "q", "t", JobState.COMPLETED, 2),  # 60 s ago: still in the last minute
        FinishedBucket(83, "q", "t", JobState.COMPLETED, 8),  # 70 s ago
        FinishedBucket(0, "q", "t", JobState.DEAD, 1),  # 15 minutes ago
        FinishedBucket(50, "q", "t", JobState.CANCELLED, 9),  # cancellations are neither
    )
    stats = shape(snapshot(finished=finished), [], Thresholds())
    q = stats.queues[0]
    assert q.completed == {"1m": 6, "5m": 14, "15m": 14}
    assert q.dead == {"1m": 0, "5m": 0, "15m": 1}
    assert q.throughput["1m"] == 6 / 60 and q.failure_rate == 1 / 15
    assert [p.completed for p in stats.series][-7:] == [8, 2, 0, 0, 0, 0, 4]
    assert stats.series[-1].at == NOW and len(stats.series) == 90


def test_groups_per_queue_and_type() -> None:
    states = (
        StateCount("a", "x", JobState.PENDING, 2),
        StateCount("a", "y", JobState.PENDING, 3),
        StateCount("b", "x", JobState.DEAD, 1),
    )
    durations = (Duration("a", "x", 0.5, 0.1), Duration("a", "y", 1.5, 0.2))
    stats = shape(snapshot(states=states, durations=durations), [], Thresholds())
    assert [(g.queue, g.type, g.counts["pending"]) for g in stats.types] == [("a", "x", 2), ("a", "y", 3), ("b", "x", 0)]
    assert [(g.queue, g.counts["pending"], g.counts["dead"]) for g in stats.queues] == [("a", 5, 0), ("b", 0, 1)]
    assert stats.total.run_time.samples == 2 and stats.queues[0].run_time.p95 == 1.5


def test_health_rules() -> None:
    pending = (PendingAge("mail", "send", 3, NOW - timedelta(seconds=400)),)
    states = (StateCount("mail", "send", JobState.PENDING, 3),)
    dead = tuple(FinishedBucket(80, "mail", "send", JobState.DEAD, 1) for _ in range(11))
    fresh = WorkerInfo("w1", "h", 1, ("mail",), 4, heartbeat_at=NOW - timedelta(seconds=5))
    stale = WorkerInfo("w2", "h", 2, ("mail",), 4, heartbeat_at=NOW - timedelta(seconds=500))

    ok = shape(snapshot(states=states), [fresh], Thresholds())
    assert ok.health.status is HealthStatus.OK and ok.workers_live == 1

    bad = shape(snapshot(states=states, pending=pending, finished=dead), [stale], Thresholds(pending_age=300, dead_growth=10))
    failing = {c.name for c in bad.health.checks if not c.ok}
    assert bad.health.status is HealthStatus.DEGRADED
    assert failing == {"dead_letter_growth", "pending_age:mail", "workers:mail"}
    assert bad.queues[0].oldest_pending_age == 400.0
