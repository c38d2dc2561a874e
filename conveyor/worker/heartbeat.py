"""Keeps this worker's leases and liveness fresh, notices leases it has lost, and watches its loop.

Leases are renewed by a thread of their own (``Renewer``), not on the event loop: an async
handler that blocks the loop (``time.sleep`` in an ``async def``) would otherwise stop every
renewal, and the leases of all the other jobs running here would expire, be rescued and run
twice. The same thread notices the blocked loop and names the job running on it. Progress and
liveness are written from the loop (``heartbeat_loop``): nothing is lost when they are late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from conveyor.backends.base import WorkerInfo
from conveyor.context import MISSING
from conveyor.errors import BackendError
from conveyor.worker.loops import repeat

if TYPE_CHECKING:
    from conveyor.worker.runtime import Run, Worker

log = logging.getLogger("conveyor.worker")

PULSE = 0.25
"""Seconds between the loop's signs of life, and between the renewal thread's looks at them."""

BLOCKED = 1.0
"""Seconds without a sign of life after which the event loop counts as blocked (and is reported)."""


class Renewer:
    """A thread that renews every running lease each third of a lease, whatever the loop is doing.

    While renewals fail (the database is unreachable) ``leases_ok`` is clear: the executor starts
    no sync handler then, since a run it started could outlive its lease and run twice.
    """

    def __init__(self, worker: Worker, loop: asyncio.AbstractEventLoop) -> None:
        self.worker = worker
        self.loop = loop
        self.leases_ok = threading.Event()
        self.leases_ok.set()
        self.halt = threading.Event()
        self.soon = threading.Event()  # renew now, not at the next interval (a cancel notification may have been missed)
        self.loop_seen = time.monotonic()
        self.blocked_since: float | None = None
        self.thread = threading.Thread(target=self._run, name="conveyor-renewer", daemon=True)

    def start(self) -> None:
        self._pulse()
        self.thread.start()

    def stop(self) -> None:
        """Stop renewing (after the drain: runs still finishing need their leases until then)."""
        self.halt.set()
        self.soon.set()
        self.thread.join(timeout=self.worker.settings.db_timeout + 1)
        if self.blocked_since is not None:  # the loop is running (it asked for this stop): say the block ended
            self.loop_seen = time.monotonic()
            self._watch(self.loop_seen)

    def _pulse(self) -> None:
        """The loop's sign of life: rescheduled on the loop itself, so it stops when the loop does."""
        self.loop_seen = time.monotonic()
        if not self.halt.is_set():
            self.loop.call_later(PULSE, self._pulse)

    def renew_soon(self) -> None:
        """Renew at once (from any thread): a lease that fails to renew is a run to stop."""
        self.soon.set()

    def _run(self) -> None:
        interval = self.worker.lease_seconds / 3
        next_renewal = time.monotonic() + interval
        while not self.halt.is_set():
            self.soon.wait(min(PULSE, interval))
            if self.halt.is_set():
                break
            now = time.monotonic()
            self._watch(now)
            if now >= next_renewal or self.soon.is_set():
                self.soon.clear()
                next_renewal = now + interval
                try:
                    self.renew()
                except Exception:  # a bug here must not end renewals for good
                    log.exception("lease renewal failed")

    def renew(self) -> None:
        worker = self.worker
        runs = running_runs(worker)
        leases = [run.ctx.lease for run in runs]
        if not leases:
            if not self.leases_ok.is_set():  # nothing held is at risk, and a job claimed next comes with a fresh lease
                log.warning("no leases left to renew; sync handlers start again")
                self.leases_ok.set()
            return
        asked = time.monotonic()
        try:
            held = set(worker.app.backend.leases_renew(leases, worker.lease_seconds))
        except Exception as exc:
            if self.leases_ok.is_set():
                log.warning("cannot renew leases (%s): no sync handler starts here until renewals work again", exc,
                            exc_info=not isinstance(exc, BackendError))
            self.leases_ok.clear()
            self._on_loop(fence_expiring, worker, runs)
            return
        if not self.leases_ok.is_set():
            log.warning("leases renewed again; sync handlers start again")
            self.leases_ok.set()
        lost = []
        for run in runs:
            if run.ctx.lease.job_id in held:
                run.ctx.lease_deadline = asked + worker.lease_seconds
            else:
                lost.append(run)
        if lost:
            self._on_loop(give_up_all, lost, "lease lost (the job was cancelled, or another worker may run it)")

    def _watch(self, now: float) -> None:
        """Report a loop that has shown no sign of life for ``BLOCKED`` seconds, once, with its culprit."""
        silent = now - self.loop_seen
        if silent < BLOCKED:
            if self.blocked_since is not None:
                log.warning("event loop ran again after being blocked for %.1f s", now - self.blocked_since)
                self.blocked_since = None
            return
        if self.blocked_since is None:
            self.blocked_since = self.loop_seen
            log.warning(
                "event loop blocked for %.1f s by %s: an async handler that does not await (time.sleep or CPU "
                "work in an async def?) stops every other async job here; leases are still renewed",
                silent, self.worker.culprit(asyncio.current_task(self.loop)),
            )

    def _on_loop(self, fn: object, *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]
        except RuntimeError:
            pass  # the loop has closed: nothing left to give up


def running_runs(worker: Worker) -> list[Run]:
    """The runs whose leases this worker holds (read from another thread: retried if it changed meanwhile)."""
    for _ in range(10):
        try:
            return [run for run in list(worker.running.values()) if not (run.lost or run.released)]
        except RuntimeError:  # the loop changed the dict while it was copied
            continue
    return []


async def heartbeat_loop(worker: Worker) -> None:
    """Every third of a lease: write progress, record liveness."""
    await repeat("heartbeat", lambda: beat(worker), worker.stopped, worker.lease_seconds / 3)


async def beat(worker: Worker) -> None:
    backend = worker.app.backend
    for run in list(worker.running.values()):
        progress = run.ctx.pending_progress
        if progress is not MISSING:
            run.ctx.pending_progress = MISSING
            try:
                await worker.bridge.call(backend.job_progress, run.ctx.lease, json.dumps(progress))
            except BackendError as exc:  # one value the database refuses must not stop the others
                log.warning("job %s: progress not written (%s)", run.ctx.job_id, exc)
    await worker.bridge.call(backend.workers_heartbeat, worker.info())


def fence_expiring(worker: Worker, runs: list[Run]) -> None:
    """The database is unreachable: stop runs whose lease is about to expire, before another
    worker may rescue and start them, so no job runs in two places at once."""
    margin = worker.lease_seconds / 3 + 0.5  # the next renewal would come too late
    now = time.monotonic()
    for run in runs:
        if run.ctx.lease_deadline - now < margin and not run.task.done():
            give_up(run, "lease about to expire while the database is unreachable")


def give_up_all(runs: list[Run], why: str) -> None:
    for run in runs:
        if not run.task.done() and not run.released:
            give_up(run, why)


def give_up(run: Run, why: str) -> None:
    log.warning("job %s: %s; cancelling this run", run.ctx.job_id, why)
    run.lost = True
    run.ctx.cancelled.set()
    run.task.cancel()


async def rescue_loop(worker: Worker) -> None:
    """Hand jobs of dead workers (expired leases) back to the queue, or to the DLQ."""
    await repeat("rescue", lambda: rescue(worker), worker.stopped, worker.settings.rescue_interval)


async def rescue(worker: Worker) -> None:
    rescued = await worker.bridge.call(worker.app.backend.jobs_rescue, 1000)
    if rescued:
        log.warning("rescued %d jobs whose worker was lost: %s", len(rescued), rescued[:20])
        worker.wake()


def worker_info(worker: Worker) -> WorkerInfo:
    return WorkerInfo(
        id=worker.id,
        host=worker.host,
        pid=worker.pid,
        queues=worker.queues,
        concurrency=worker.concurrency,
        running=len(worker.running),
    )
