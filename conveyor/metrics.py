"""Prometheus metrics: a collector that reads ``app.admin.stats()`` at scrape time.

Nothing is counted in-process, so every web or worker process exposes the same numbers
(the database's), and a scrape costs one stats snapshot.

    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry(); registry.register(ConveyorCollector(app))
    >>> generate_latest(registry)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.stats import WINDOWS, HealthStatus

if TYPE_CHECKING:
    from conveyor.app import Conveyor


class ConveyorCollector(Collector):
    """Gauges per queue and job type, read from the database on each scrape."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        stats = self.app.admin.stats()
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs by queue, type and state", labels=["queue", "type", "state"])
        done = GaugeMetricFamily(
            "conveyor_jobs_finished_recent", "Jobs completed or dead within the window", labels=["queue", "type", "state", "window"]
        )
        rate = GaugeMetricFamily("conveyor_throughput_per_second", "Completed jobs per second over the window", labels=["queue", "window"])
        failure = GaugeMetricFamily("conveyor_failure_ratio", "Dead / (completed + dead) over 15 minutes", labels=["queue"])
        oldest = GaugeMetricFamily("conveyor_oldest_pending_seconds", "Age of the longest-waiting due job", labels=["queue"])
        run = GaugeMetricFamily("conveyor_run_seconds", "Run time of recent completed jobs", labels=["queue", "type", "quantile"])
        wait = GaugeMetricFamily("conveyor_wait_seconds", "Wait from due to start of recent jobs", labels=["queue", "type", "quantile"])
        for g in stats.types:
            assert g.queue is not None and g.type is not None
            for state, count in g.counts.items():
                jobs.add_metric([g.queue, g.type, state], count)
            for window, _ in WINDOWS:
                done.add_metric([g.queue, g.type, "completed", window], g.completed[window])
                done.add_metric([g.queue, g.type, "dead", window], g.dead[window])
            for family, p in ((run, g.run_time), (wait, g.wait_time)):
                for quantile, value in (("0.5", p.p50), ("0.95", p.p95)):
                    if value is not None:
                        family.add_metric([g.queue, g.type, quantile], value)
        for q in stats.queues:
            assert q.queue is not None
            for window, _ in WINDOWS:
                rate.add_metric([q.queue, window], q.throughput[window])
            if q.failure_rate is not None:
                failure.add_metric([q.queue], q.failure_rate)
            oldest.add_metric([q.queue], q.oldest_pending_age or 0.0)
        workers = GaugeMetricFamily("conveyor_workers_live", "Workers with a fresh heartbeat serving the queue", labels=["queue"])
        for queue, count in stats.live_workers.items():
            workers.add_metric([queue], count)
        paused = GaugeMetricFamily("conveyor_queue_paused", "1 while an operator has paused the queue", labels=["queue"])
        for q in stats.queues:
            assert q.queue is not None
            paused.add_metric([q.queue], 1.0 if q.queue in stats.paused else 0.0)
        healthy = GaugeMetricFamily("conveyor_healthy", "1 when every health check passes, 0 when degraded")
        healthy.add_metric([], 1.0 if stats.health.status is HealthStatus.OK else 0.0)
        yield from (jobs, done, rate, failure, oldest, run, wait, workers, paused, healthy)


def exposition(app: Conveyor) -> bytes:
    """The Prometheus text format for one scrape of ``app``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConveyorCollector(app))
    return generate_latest(registry)
