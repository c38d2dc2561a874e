"""Writes run outcomes back in batches, then tells the app's event subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.backends.base import FinishParams
from conveyor.errors import BackendError, BackendUnavailable
from conveyor.events import JobEvent
from conveyor.job import JobState
from conveyor.options import decode_backoff
from conveyor.outcome import Complete, Dead, Retry, describe, failure
from conveyor.retry import Backoff, Exponential
from conveyor.worker.bridge import Bridge
from conveyor.worker.executor import RunResult

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")

SINGLE_TRIES = 3
"""Writes of one outcome, alone, before it counts as refused by the database (a passing lock
or conflict clears within them; a value the database cannot hold fails every time)."""


class Completer:
    """Collects finished runs and flushes them in one transaction per batch.

    A flush waits at most ``delay`` for company, so a lone job is not held back and a busy
    worker writes ``batch`` outcomes per commit. While the database is unreachable a batch is
    kept and retried with backoff (fencing makes a late write harmless). A batch the database
    refuses is written again one outcome at a time, so one outcome it cannot store is isolated
    and written as a failure of its run, and never holds back the others.
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
                won, batch = await self._write(batch)
            except BackendUnavailable as exc:  # kept and retried: fencing makes a late write harmless
                log.warning("could not write %d outcomes (%s); retrying in %.2f s", len(batch), exc, retry_in)
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

    async def _write(self, batch: list[RunResult]) -> tuple[set[int], list[RunResult]]:
        """The won job ids, and the results as written (a refused outcome replaced by its failure)."""
        try:
            return set(await self.bridge.call(self.app.backend.jobs_finish, [r.write for r in batch])), batch
        except BackendUnavailable:
            raise
        except Exception as exc:
            log.warning("could not write a batch of %d outcomes (%s); writing them one at a time", len(batch), exc,
                        exc_info=not isinstance(exc, BackendError))
        won: set[int] = set()
        written: list[RunResult] = []
        for r in batch:
            ids, r = await self._write_alone(r)
            won |= ids
            written.append(r)
        return won, written

    async def _write_alone(self, r: RunResult) -> tuple[set[int], RunResult]:
        refusal: Exception | None = None
        for attempt in range(SINGLE_TRIES):
            try:
                return set(await self.bridge.call(self.app.backend.jobs_finish, [r.write])), r
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                refusal = exc
                await asyncio.sleep(0.05 * 2**attempt)
        assert refusal is not None
        failed = self._refused(r, refusal)
        log.error("job %s: the database refused its outcome (%s); recorded as a failed run", r.job.id, refusal)
        try:
            return set(await self.bridge.call(self.app.backend.jobs_finish, [failed.write])), failed
        except BackendUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 (the lease runs out and the rescuer takes the job back)
            log.error("job %s: not even its failure could be written (%s); left to the lease rescue", r.job.id, exc)
            return set(), failed

    def _refused(self, r: RunResult, refusal: Exception) -> RunResult:
        """The run's outcome as a failure saying why it was not stored (children dropped with it)."""
        job = r.job
        error = describe(refusal)
        outcome = failure(job.attempt, job.max_attempts, self._backoff(job.type, job.backoff),
                          f"the run's outcome could not be stored: {error}")
        worker = r.write.worker_id
        if isinstance(outcome, Retry):
            write = FinishParams(r.write.lease, JobState.PENDING, delay=outcome.delay, error=outcome.error, worker_id=worker)
        else:
            write = FinishParams(r.write.lease, JobState.DEAD, error=outcome.error, worker_id=worker)
        return RunResult(job, outcome, write, r.duration)

    def _backoff(self, job_type: str, override: str | None) -> Backoff:
        if override:
            return decode_backoff(override)
        spec = self.app.registry.find(job_type)
        return Exponential() if spec is None else spec.options.backoff_strategy

    async def _emit(self, r: RunResult) -> None:
        events = self.app.events
        d = r.outcome
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
