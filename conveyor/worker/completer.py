"""Writes run outcomes back in batches, then tells the app's event subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.errors import BackendError
from conveyor.events import JobEvent
from conveyor.outcome import Complete, Dead, Retry
from conveyor.worker.bridge import Bridge
from conveyor.worker.executor import RunResult

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


class Completer:
    """Collects finished runs and flushes them in one transaction per batch.

    A flush waits at most ``delay`` for company, so a lone job is not held back and a busy
    worker writes ``batch`` outcomes per commit. A failed flush is retried with backoff:
    outcomes are kept until written, and fencing makes a late write harmless.
    """

    def __init__(self, app: Conveyor, bridge: Bridge, batch: int, delay: float, written: Callable[[int], None]) -> None:
        self.app = app
        self.bridge = bridge
        self.batch = batch
        self.delay = delay
        self.written = written
        self._items: list[RunResult] = []
        self._ready = asyncio.Event()
        self._stopping = False

    def add(self, result: RunResult) -> None:
        self._items.append(result)
        self._ready.set()

    @property
    def backlog(self) -> int:
        return len(self._items)

    async def run(self) -> None:
        while not (self._stopping and not self._items):
            await self._ready.wait()
            if len(self._items) < self.batch and not self._stopping:
                await asyncio.sleep(self.delay)
            await self.flush()

    async def flush(self) -> None:
        retry_in = 0.05
        while self._items:
            batch, self._items = self._items[: self.batch], self._items[self.batch :]
            if not self._items:
                self._ready.clear()
            try:
                won = set(await self.bridge.call(self.app.backend.jobs_finish, [r.outcome for r in batch]))
            except Exception as exc:  # kept and retried: fencing makes a late write harmless
                log.warning("could not write %d outcomes (%s); retrying in %.2f s", len(batch), exc, retry_in,
                            exc_info=not isinstance(exc, BackendError))
                self._items[:0] = batch
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, 5.0)
                continue
            retry_in = 0.05
            self.written(len(batch))
            if len(won) == len(batch) and not self.app.events.wanted_any():
                continue  # the common batch: every lease held, nobody subscribed
            for r in batch:
                if r.job.id in won:
                    await self._emit(r)
                else:
                    log.warning("job %s: lease lost before its outcome was written; the newer run decides", r.job.id)

    async def _emit(self, r: RunResult) -> None:
        events = self.app.events
        d = r.decision
        if isinstance(d, Complete) and events.wanted("completed"):
            await events.emit(JobEvent("completed", r.job, r.job.attempt, result=d.result))
        elif isinstance(d, Retry | Dead):
            if events.wanted("failed"):
                await events.emit(JobEvent("failed", r.job, r.job.attempt, error=d.error))
            if isinstance(d, Dead) and events.wanted("dead"):
                await events.emit(JobEvent("dead", r.job, r.job.attempt, error=d.error))

    async def stop(self) -> None:
        self._stopping = True
        self._ready.set()
