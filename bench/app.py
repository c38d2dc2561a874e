"""The benchmark's job types: a no-op and a 50 ms nap, queued on the ``bench`` queue.

The database comes from ``CONVEYOR_DATABASE_URL``, so ``conveyor worker bench.app:app`` runs
against whichever scratch database bench/run.py made.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import Conveyor


async def noop(p: dict[str, Any]) -> None:
    return None


async def nap(p: dict[str, Any]) -> None:
    await asyncio.sleep(0.05)


def declare(app: Conveyor) -> Conveyor:
    """Declare the bench jobs on ``app`` (the worker's app here, or an enqueuing client)."""
    app.job(queue="bench", max_attempts=1)(noop)
    app.job(queue="bench", max_attempts=1)(nap)
    return app


app = declare(Conveyor())
