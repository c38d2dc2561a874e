"""Stats and health: pure shaping of an Insights snapshot into what people and Prometheus read.

No I/O here: ``shape`` takes what the database returned and the workers' heartbeats, so every
rule (windows, percentiles, health thresholds) is tested without a database.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from conveyor.backends.base import WorkerInfo
from conveyor.backends.insights import Duration, Snapshot
from conveyor.job import JobState

WINDOWS: tuple[tuple[str, float], ...] = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
"""Throughput windows, the longest equal to the snapshot's window."""

ACTIVE_STATES = (JobState.WAITING, JobState.SCHEDULED, JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Seconds; None when nothing completed in the window."""

    p50: float | None = None
    p95: float | None = None
    samples: int = 0


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One queue, one job type in one queue, or everything (``queue``/``type`` None)."""

    queue: str | None
    type: str | None
    counts: dict[str, int]  # every state, zero included
    completed: dict[str, int]  # finished ok in the last 1m / 5m / 15m
    dead: dict[str, int]  # died in the last 1m / 5m / 15m: the dead-letter queue's growth
    throughput: dict[str, float]  # completed per second over each window
    failure_rate: float | None  # dead / (completed + dead) over 15 minutes
    oldest_pending_age: float | None  # seconds the longest-waiting due job has waited
    run_time: Percentiles
    wait_time: Percentiles


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One bucket of the throughput chart."""

    at: datetime
    completed: int
    dead: int


class HealthStatus(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Health:
    status: HealthStatus
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When health turns degraded; see Settings.health_*."""

    pending_age: float = 300.0
    dead_growth: int = 10
    worker_stale_after: float = 60.0


@dataclass(frozen=True, slots=True)
class Stats:
    at: datetime
    total: GroupStats
    queues: tuple[GroupStats, ...]
    types: tuple[GroupStats, ...]
    series: tuple[SeriesPoint, ...]
    live_workers: dict[str, int]  # queue -> workers with a fresh heartbeat serving it
    health: Health
    bucket_seconds: float = 10.0
    workers_live: int = 0  # distinct workers with a fresh heartbeat
    finished_counts_age: float = 0.0  # completed/cancelled totals may lag by this many seconds on big tables
    paused: dict[str, datetime] = field(default_factory=dict)  # queue -> when an operator paused it


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank p50 and p95."""
    if not values:
        return Percentiles()
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return Percentiles(rank(0.50), rank(0.95), len(ordered))


def is_live(worker: WorkerInfo, now: datetime, stale_after: float) -> bool:
    return worker.heartbeat_at is not None and now - worker.heartbeat_at <= timedelta(seconds=stale_after)


def shape(snapshot: Snapshot, workers: Iterable[WorkerInfo], thresholds: Thresholds, queues: Iterable[str] = ()) -> Stats:
    """Fold the snapshot into totals, per queue and per (queue, type), plus the chart and health."""
    keys: set[tuple[str, str]] = {(s.queue, s.type) for s in snapshot.states}
    keys |= {(f.queue, f.type) for f in snapshot.finished} | {(p.queue, p.type) for p in snapshot.pending}
    per_type = tuple(_group(snapshot, same_pair(k), *k) for k in sorted(keys))
    queue_names = sorted({q for q, _ in keys} | set(queues) | {q for q, _ in snapshot.paused})
    per_queue = tuple(_group(snapshot, same_queue(name), name, None) for name in queue_names)
    total = _group(snapshot, lambda q, t: True, None, None)
    live: dict[str, int] = {name: 0 for name in queue_names}
    alive = 0
    for worker in workers:
        if is_live(worker, snapshot.now, thresholds.worker_stale_after):
            alive += 1
            for name in worker.queues:
                live[name] = live.get(name, 0) + 1
    health = judge(total, per_queue, live, thresholds)
    return Stats(
        snapshot.now, total, per_queue, per_type, _series(snapshot), live, health, snapshot.params.bucket, alive,
        snapshot.finished_counts_age, dict(snapshot.paused),
    )


def same_pair(key: tuple[str, str]) -> Callable[[str, str], bool]:
    return lambda queue, job_type: (queue, job_type) == key


def same_queue(name: str) -> Callable[[str, str], bool]:
    return lambda queue, job_type: queue == name


def _group(snapshot: Snapshot, picks: Callable[[str, str], bool], queue: str | None, job_type: str | None) -> GroupStats:
    counts = {state.value: 0 for state in JobState}
    for s in snapshot.states:
        if picks(s.queue, s.type):
            counts[s.state.value] += s.count
    buckets = int(snapshot.params.window // snapshot.params.bucket)
    completed = {name: 0 for name, _ in WINDOWS}
    dead = {name: 0 for name, _ in WINDOWS}
    for f in snapshot.finished:
        if not picks(f.queue, f.type) or f.state is JobState.CANCELLED:
            continue
        age = (buckets - f.bucket) * snapshot.params.bucket  # how far back this bucket starts
        for name, seconds in WINDOWS:
            if age <= seconds:
                (completed if f.state is JobState.COMPLETED else dead)[name] += f.count
    throughput = {name: completed[name] / seconds for name, seconds in WINDOWS}
    ended = completed["15m"] + dead["15m"]
    due = [p for p in snapshot.pending if picks(p.queue, p.type)]
    oldest = min((p.oldest_due for p in due), default=None)
    runs: list[Duration] = [d for d in snapshot.durations if picks(d.queue, d.type)]
    return GroupStats(
        queue=queue,
        type=job_type,
        counts=counts,
        completed=completed,
        dead=dead,
        throughput=throughput,
        failure_rate=dead["15m"] / ended if ended else None,
        oldest_pending_age=None if oldest is None else max(0.0, (snapshot.now - oldest).total_seconds()),
        run_time=percentiles([d.run for d in runs]),
        wait_time=percentiles([d.wait for d in runs]),
    )


def _series(snapshot: Snapshot) -> tuple[SeriesPoint, ...]:
    bucket = snapshot.params.bucket
    buckets = int(snapshot.params.window // bucket)
    start = snapshot.now - timedelta(seconds=snapshot.params.window)
    completed: dict[int, int] = defaultdict(int)
    dead: dict[int, int] = defaultdict(int)
    for f in snapshot.finished:
        if f.state is JobState.COMPLETED:
            completed[f.bucket] += f.count
        elif f.state is JobState.DEAD:
            dead[f.bucket] += f.count
    return tuple(
        SeriesPoint(start + timedelta(seconds=(i + 1) * bucket), completed[i], dead[i]) for i in range(buckets)
    )


def judge(total: GroupStats, queues: Sequence[GroupStats], live: dict[str, int], t: Thresholds) -> Health:
    """Degraded when the DLQ grows, a due job waits too long, or a queue with work has no live worker."""
    checks = [
        Check(
            "dead_letter_growth",
            total.dead["15m"] <= t.dead_growth,
            f"{total.dead['15m']} jobs died in the last 15 minutes (limit {t.dead_growth})",
        )
    ]
    for q in queues:
        assert q.queue is not None
        age = q.oldest_pending_age
        if age is not None:
            checks.append(
                Check(f"pending_age:{q.queue}", age <= t.pending_age, f"oldest due job waited {age:.0f} s (limit {t.pending_age:.0f} s)")
            )
        has_work = any(q.counts[s.value] for s in (JobState.PENDING, JobState.RUNNING)) or age is not None
        if has_work:  # due or running jobs that no live worker will run
            n = live.get(q.queue, 0)
            checks.append(Check(f"workers:{q.queue}", n > 0, f"{n} live worker{'s' if n != 1 else ''}"))
    status = HealthStatus.OK if all(c.ok for c in checks) else HealthStatus.DEGRADED
    return Health(status, tuple(checks))
