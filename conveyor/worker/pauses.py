"""Follows which queues operators paused, so this worker stops claiming from them within a second."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from conveyor.errors import BackendError

if TYPE_CHECKING:
    from conveyor.worker.runtime import Worker

log = logging.getLogger("conveyor.worker")

LOOK_EVERY = 0.5
"""Seconds between reads of the paused queues: a pause takes effect within one read and one claim."""


async def pause_loop(worker: Worker) -> None:
    """Keep ``worker.paused`` equal to the paused queues it serves; wake the fetcher on a resume."""
    while not worker.stopped.is_set():
        try:
            paused = await worker.bridge.call(worker.app.backend.queues_paused)
            now = frozenset(q for q in worker.queues if q in paused)
            if now != worker.paused:
                resumed = worker.paused - now
                for queue in sorted(now - worker.paused):
                    log.info("queue %s paused: claiming nothing from it until resumed", queue)
                for queue in sorted(resumed):
                    log.info("queue %s resumed", queue)
                worker.paused = now
                if resumed:
                    worker.wake()
        except Exception as exc:  # the next look tries again; meanwhile the last known pauses hold
            log.warning("could not read paused queues (%s); retrying", exc, exc_info=not isinstance(exc, BackendError))
        try:
            await asyncio.wait_for(worker.stopped.wait(), LOOK_EVERY)
        except TimeoutError:
            pass
