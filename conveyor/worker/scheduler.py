"""Fires due cron schedules; each fire is enqueued once however many workers check at once.

Every worker runs this loop. The store decides who fires: a worker moves a due schedule's
``next_fire_at`` forward with a compare-and-set and inserts the fire's jobs in the same
transaction, so the losers of the race change nothing. Each job also carries the key
``cron:<name>:<fire time>`` as its idempotency key, a second guard against a double fire.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from conveyor.backends.base import FireParams
from conveyor.cron import Cron, Missed, fire_key, plan_fires
from conveyor.errors import BackendError, ConveyorError
from conveyor.worker.loops import LoopDone, repeat

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.worker.runtime import Worker

log = logging.getLogger("conveyor.scheduler")

MAX_TICK = 1.0
"""Longest pause between looks at the schedule table (it also picks up pauses and resumes)."""


async def scheduler_loop(worker: Worker) -> None:
    """Sync the app's declared schedules to the store, then fire them as they fall due."""
    app = worker.app
    synced = False

    async def step() -> float:
        nonlocal synced
        if not synced:
            try:
                await worker.bridge.call(app.cron_sync)
            except BackendError:
                raise
            except ConveyorError as exc:
                log.error("schedules not synced, none will fire from this worker: %s", exc)
                raise LoopDone from exc
            synced = True  # and the loop goes on without declared schedules: some may be added at run time
        return float(await worker.bridge.call(tick, app))

    await repeat("scheduler pass", step, worker.stopped, MAX_TICK)


def tick(app: Conveyor) -> float:
    """Fire every due schedule once; return the seconds until the next is due (at most MAX_TICK)."""
    now, schedules = app.backend.schedules_due()
    wait = MAX_TICK
    for schedule in schedules:
        if schedule.job_type not in app.registry:
            continue  # another app's schedule (its workers know the job type and fire it)
        if schedule.next_fire_at > now:
            wait = min(wait, (schedule.next_fire_at - now).total_seconds())
            continue
        try:
            fires, following = plan_fires(Cron(schedule.expression, schedule.tz), schedule.next_fire_at, now, Missed(schedule.missed))
            jobs = tuple(
                app.new_job(schedule.job_type, schedule.payload, {**schedule.options, "idempotency_key": fire_key(schedule.name, at)})
                for at in fires
            )
        except ConveyorError as exc:  # the row no longer fits this code (e.g. its job type is gone)
            log.error("schedule %s cannot fire: %s", schedule.name, exc)
            continue
        ids = app.backend.schedule_fire(FireParams(schedule.name, schedule.next_fire_at, following, jobs, fires[-1] if fires else None))
        if ids is not None:
            skipped = "" if fires and fires[0] == schedule.next_fire_at else " (missed fires skipped)"
            log.info("schedule %s fired %d job(s) %s%s; next at %s", schedule.name, len(ids), ids, skipped, following.isoformat())
        wait = min(wait, (following - now).total_seconds())
    return max(wait, 0.01)
