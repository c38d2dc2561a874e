"""Retention: every worker prunes finished jobs by policy, in small batches, on a schedule.

Each batch is one short transaction (``prune_batch`` rows), and the loop yields between
batches, so pruning a large backlog never holds the lock claims need for long. Several
workers pruning at once is harmless: PostgreSQL skips rows another pruner holds, SQLite
serialises the batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from conveyor.worker.loops import repeat

if TYPE_CHECKING:
    from conveyor.worker.runtime import Worker

log = logging.getLogger("conveyor.worker")


async def prune_loop(worker: Worker) -> None:
    """Every ``prune_interval`` seconds (first run at a random point of it): prune, forget dead
    workers, and vacuum Conveyor's tables if autovacuum left too many dead row versions."""
    interval = worker.settings.prune_interval
    first = random.uniform(0.1, 1.0) * interval  # workers started together do not prune together
    await repeat("pruning", lambda: prune_step(worker), worker.stopped, interval, first)


async def prune_step(worker: Worker) -> None:
    removed = await prune_once(worker)
    if removed:
        log.info("pruned %d finished jobs", removed)
    stale = max(3600.0, worker.settings.worker_stale_after)
    await worker.bridge.call(worker.app.insights.workers_forget, stale)  # housekeeping, not audited
    if worker.settings.vacuum_dead_rows is not None:
        vacuumed = await worker.bridge.call(worker.app.insights.tables_vacuum, worker.settings.vacuum_dead_rows)
        if vacuumed:
            log.info("vacuumed %s", ", ".join(vacuumed))


async def prune_once(worker: Worker) -> int:
    """Delete batches until one comes back short; stop early when the worker stops."""
    app = worker.app
    policy = app.admin.prune_policy(limit=worker.settings.prune_batch)
    total = 0
    while not worker.stopped.is_set():
        removed = await worker.bridge.call(app.insights.jobs_prune, policy)
        total += removed
        if removed < policy.limit:
            break
        await asyncio.sleep(0.05)  # let claims and completions in between batches
    return total
