"""Keeps this worker's leases and liveness fresh, and notices leases it has lost."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from conveyor.backends.base import WorkerInfo
from conveyor.context import MISSING
from conveyor.errors import BackendError

if TYPE_CHECKING:
    from conveyor.worker.runtime import Run, Worker

log = logging.getLogger("conveyor.worker")


async def heartbeat_loop(worker: Worker) -> None:
    """Every third of a lease (or when asked, ``beat_soon``): renew running leases, write progress,
    record liveness. A run whose renewal fails was cancelled or taken over: it is stopped."""
    interval = worker.lease_seconds / 3
    while not worker.stopped.is_set():
        worker.beat_soon.clear()
        try:
            await beat(worker)
        except Exception as exc:  # the next beat tries again; expiring runs were fenced
            log.warning("heartbeat failed (%s); retrying", exc, exc_info=not isinstance(exc, BackendError))
        try:
            await asyncio.wait_for(worker.beat_soon.wait(), interval)
        except TimeoutError:
            pass


async def beat(worker: Worker) -> None:
    backend = worker.app.backend
    runs = list(worker.running.values())
    leases = [run.ctx.lease for run in runs]
    if leases:
        asked = time.monotonic()
        try:
            held = set(await worker.bridge.call(backend.leases_renew, leases, worker.lease_seconds))
        except Exception:
            fence_expiring(worker, runs)
            raise
        for run in runs:
            if run.ctx.lease.job_id in held:
                run.ctx.lease_deadline = asked + worker.lease_seconds
            elif not run.task.done():
                give_up(run, "lease lost (the job was cancelled, or another worker may run it)")
    for run in runs:
        progress = run.ctx.pending_progress
        if progress is not MISSING:
            run.ctx.pending_progress = MISSING
            await worker.bridge.call(backend.job_progress, run.ctx.lease, json.dumps(progress))
    await worker.bridge.call(backend.workers_heartbeat, worker.info())


def fence_expiring(worker: Worker, runs: list[Run]) -> None:
    """The database is unreachable: stop runs whose lease is about to expire, before another
    worker may rescue and start them, so no job runs in two places at once."""
    margin = worker.lease_seconds / 3 + 0.5  # the next heartbeat would come too late
    now = time.monotonic()
    for run in runs:
        if run.ctx.lease_deadline - now < margin and not run.task.done():
            give_up(run, "lease about to expire while the database is unreachable")


def give_up(run: Run, why: str) -> None:
    log.warning("job %s: %s; cancelling this run", run.ctx.job_id, why)
    run.lost = True
    run.ctx.cancelled.set()
    run.task.cancel()


async def rescue_loop(worker: Worker) -> None:
    """Hand jobs of dead workers (expired leases) back to the queue, or to the DLQ."""
    while not worker.stopped.is_set():
        try:
            rescued = await worker.bridge.call(worker.app.backend.jobs_rescue, 1000)
            if rescued:
                log.warning("rescued %d jobs whose worker was lost: %s", len(rescued), rescued[:20])
                worker.wake()
        except Exception as exc:
            log.warning("rescue failed (%s); retrying", exc, exc_info=not isinstance(exc, BackendError))
        try:
            await asyncio.wait_for(worker.stopped.wait(), worker.settings.rescue_interval)
        except TimeoutError:
            pass


def worker_info(worker: Worker) -> WorkerInfo:
    return WorkerInfo(
        id=worker.id,
        host=worker.host,
        pid=worker.pid,
        queues=worker.queues,
        concurrency=worker.concurrency,
        running=len(worker.running),
    )
