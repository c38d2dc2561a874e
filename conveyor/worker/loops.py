"""The one shape of the worker's background loops (heartbeat, rescue, scheduler, pruner).

Each loop is a step called every so often until the worker stops. A step that fails is logged
and tried again at its next turn: nothing in a background loop may end the worker. A step may
return the delay until its next turn (the scheduler sleeps until the next fire is due), or raise
``LoopDone`` when it has nothing left to do in this worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from conveyor.errors import BackendError

log = logging.getLogger("conveyor.worker")


class LoopDone(Exception):
    """A background step has nothing more to do in this worker: its loop ends."""


async def stopped_within(stopped: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stopped`` is set first; True when it was (the loop should end)."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return stopped.is_set()
    try:
        await asyncio.wait_for(stopped.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def repeat(
    name: str,
    step: Callable[[], Awaitable[float | None]],
    stopped: asyncio.Event,
    interval: float,
    first: float = 0.0,
) -> None:
    """Run ``step`` after ``first`` seconds, then every ``interval`` (or the delay it returns), until ``stopped``."""
    delay = first
    while not await stopped_within(stopped, delay):
        delay = interval
        try:
            wanted = await step()
        except LoopDone:
            return
        except BackendError as exc:  # the database is away: the next turn tries again
            log.warning("%s failed (%s); retrying in %.1f s", name, exc, interval)
            continue
        except Exception:  # a bug in one turn must not stop the loop for good
            log.exception("%s failed; retrying in %.1f s", name, interval)
            continue
        if wanted is not None:
            delay = wanted
