"""Worker: claims jobs for its free slots, runs them, and stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from conveyor.backends import location
from conveyor.backends.base import ClaimLimit, ClaimParams, WorkerInfo
from conveyor.context import JobContext
from conveyor.errors import BackendError, ConfigError
from conveyor.job import Job
from conveyor.outcome import Dead, Retry
from conveyor.worker.bridge import Bridge
from conveyor.worker.completer import Completer
from conveyor.worker.executor import Executor, NotStarted, RunResult, outcome_name
from conveyor.worker.heartbeat import Renewer, give_up, heartbeat_loop, rescue_loop, worker_info
from conveyor.worker.pauses import pause_loop
from conveyor.worker.pruner import prune_loop
from conveyor.worker.scheduler import scheduler_loop

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")

DUPLICATE_SIGNAL = 0.2
"""Seconds within which a repeated signal is the same one arriving twice (e.g. ``timeout`` signals
the process and its group), not the operator asking to stop at once."""

STUCK_SHARE = 0.25
"""The share of the worker's slots that overrunning sync handlers may hold (at least one) before
the worker stops claiming and hands over to a fresh process (see ``Worker.replace``)."""

CLAIM_GATHER = 0.002
"""Seconds a claim for a few free slots waits for more runs to end (throughput at no visible latency)."""

EXIT_MARGIN = 2.0
"""Seconds the worker waits, after its drain, for handler tasks it cancelled to end; a handler that
swallows its cancellation is then left behind, so shutdown ends within the grace period plus this."""

START_MARGIN = 0.5
"""A sync handler does not start with less than this many seconds left on its lease as this worker
last renewed it: the run could not be told in time that its lease ran out."""


@dataclass(eq=False)
class Run:
    """A job this worker is running."""

    job: Job
    ctx: JobContext
    task: asyncio.Task[None] = field(init=False)
    lost: bool = False  # lease renewal failed: another worker may own it now
    released: bool = False  # handed back at shutdown: its outcome must not be written


class Worker:
    """One worker process: up to ``concurrency`` jobs at once from ``queues``.

    >>> Worker(app, queues=["email"], concurrency=20).run()   # until SIGTERM
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        queues: list[str] | tuple[str, ...] | None = None,
        concurrency: int | None = None,
        install_signals: bool = True,
        worker_id: str | None = None,
        **settings: Any,
    ) -> None:
        self.app = app
        self.settings = replace(app.settings, **settings) if settings else app.settings
        self.queues = tuple(queues or self.settings.queues or app.registry.queues() or ("default",))
        self.concurrency = int(concurrency or self.settings.concurrency)
        if self.concurrency < 1:
            raise ConfigError("concurrency", f"must be >= 1, not {self.concurrency}")
        self.lease_seconds = self.settings.lease_seconds
        self.install_signals = install_signals
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = worker_id or f"{self.host}-{self.pid}-{uuid.uuid4().hex[:6]}"
        self.running: dict[int, Run] = {}
        self.stopped = asyncio.Event()
        self.started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.signals = 0
        self.first_signal_at = 0.0
        self.paused: frozenset[str] = frozenset()  # queues of ours an operator paused (conveyor/worker/pauses.py)
        self.replace = False
        """Set when overrunning sync handlers hold too many threads: the worker has stopped
        gracefully and wants a fresh process in its place (``conveyor worker`` gives it one)."""

    # -- entry points -------------------------------------------------------------------

    def run(self) -> None:
        """Block until stopped by a signal or ``stop()``.

        Not ``asyncio.run``: at its end it waits for every task to finish, without limit, and a
        handler task that swallows ``CancelledError`` would keep the process alive for good.
        """
        loop = asyncio.new_event_loop()
        main = threading.current_thread() is threading.main_thread()
        if main:
            asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve())
        finally:
            try:
                close_loop(loop, EXIT_MARGIN)
            finally:
                if main:
                    asyncio.set_event_loop(None)

    def stop(self) -> None:
        """Ask a running worker to shut down gracefully (thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._begin_stop)

    def wake(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake.set)

    def info(self) -> WorkerInfo:
        return worker_info(self)

    # -- the loop -----------------------------------------------------------------------

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self.bridge = Bridge()
        self.threads = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="conveyor-job")
        self.renewer = Renewer(self, self.loop)
        self.executor = Executor(self.app, self.id, self.threads, overran=self._check_stuck, may_start=self._may_start, freed=self._slot.set)
        self.completer = Completer(self.app, self.bridge, self.settings.finish_batch, self.settings.finish_delay, lambda n: None)
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self._on_signal, sig)
        self.limits, self.aging, self.batch_sizes = flow_control(self.app, self.queues)
        self.batch_extra = 0  # jobs beyond the first of each running batch: a batch takes one slot
        await self._register()
        try:
            paused = await self.bridge.call(self.app.backend.queues_paused)
            self.paused = frozenset(q for q in self.queues if q in paused)
        except BackendError as exc:  # the pause loop reads them again shortly
            log.warning("could not read paused queues (%s)", exc)
        unlisten = self.app.backend.listen(self.wake)
        unlisten_cancel = self.app.backend.listen_cancel(self._cancelled_elsewhere)
        log.info("worker %s started: queues=%s concurrency=%d database=%s", self.id, ",".join(self.queues), self.concurrency,
                 location(self.app.backend.url))
        self.renewer.start()
        self.started.set()
        helpers = [
            asyncio.create_task(self.completer.run(), name="completer"),
            asyncio.create_task(heartbeat_loop(self), name="heartbeat"),
            asyncio.create_task(rescue_loop(self), name="rescuer"),
            asyncio.create_task(scheduler_loop(self), name="scheduler"),
            asyncio.create_task(prune_loop(self), name="pruner"),
            asyncio.create_task(pause_loop(self), name="pauses"),
        ]
        try:
            await self._fetch_loop()
            await self._drain()
        finally:
            unlisten()
            unlisten_cancel()
            self.stopped.set()
            await self.bridge.call(self.renewer.stop)
            await self.completer.stop()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await self.bridge.call(self.app.backend.workers_remove, self.id)
            except BackendError as exc:
                log.warning("could not remove worker row: %s", exc)
            self.bridge.close()
            self.threads.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped", self.id)

    async def _register(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.bridge.call(self.app.backend.workers_heartbeat, self.info())
                return
            except BackendError as exc:
                log.warning("database not reachable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _fetch_loop(self) -> None:
        poll = self.settings.poll_interval
        failures = 0
        while not self._stopping:
            free = self._free_slots()
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()  # resumes a loop turn later: runs ending in this turn free their slots too
                continue
            if free < self.concurrency // 4 and self.running:
                # Few slots free while many run: a moment lets more runs end, so one claim (one
                # commit) fills many slots instead of each slot costing its own transaction.
                await asyncio.sleep(CLAIM_GATHER)
                free = self._free_slots()
            self._wake.clear()
            queues = self.claimable_queues
            if not queues:  # every queue of ours is paused: wait for a resume (the pause loop wakes us)
                await self._sleep(poll)
                continue
            try:
                jobs = await self._claim(ClaimParams(self.id, queues, free, self.lease_seconds, self.limits, (), self.aging))
                failures = 0
            except Exception as exc:  # nothing but shutdown stops the worker: back off and try again
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                log.warning("claim failed (%s); retrying in %.1f s", exc, delay, exc_info=not isinstance(exc, BackendError))
                await self._sleep(delay)
                continue
            if self.batch_sizes:
                await self._dispatch_batches(jobs)
            else:
                for job in jobs:
                    self._start(job)
            if len(jobs) < free:
                await self._sleep(poll)

    @property
    def claimable_queues(self) -> tuple[str, ...]:
        """This worker's queues less those an operator paused."""
        return self.queues if not self.paused else tuple(q for q in self.queues if q not in self.paused)

    def _free_slots(self) -> int:
        """Slots to claim for: a batch takes one slot, a thread held by an overrun sync handler one."""
        return self.concurrency - len(self.running) + self.batch_extra - len(self.executor.stuck)

    async def _claim(self, params: ClaimParams) -> list[Job]:
        """The claim's transaction on the database thread; its rows become Jobs here, on the loop,
        while that thread is already writing the completions of the batch before."""
        rows = await self.bridge.call(self.app.backend.jobs_claim_rows, params)
        return self.app.backend.read_claimed(rows)

    async def _sleep(self, seconds: float) -> None:
        """Wait for a wake-up (enqueue notification), a stop, or the poll interval."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    def _start(self, job: Job) -> None:
        run = Run(job, JobContext(self.app, job, self.id))
        run.task = asyncio.get_running_loop().create_task(self._execute(run))  # unnamed: a name costs ~1.5 µs a job
        self.running[job.id] = run

    async def _execute(self, run: Run) -> None:
        try:
            result = await self.executor.run(run.job, run.ctx)
        except asyncio.CancelledError:
            return  # lease lost or released at shutdown: the store already knows
        except NotStarted as exc:
            await self._not_started([run], str(exc))
            return
        finally:
            self.running.pop(run.job.id, None)
            self._slot.set()
        if run.lost or run.released:
            return
        self.completer.add(result)
        self._log(result)

    def _may_start(self, ctxs: list[JobContext]) -> str | None:
        """Asked on a handler's thread just before a sync handler starts: why it must not, if so."""
        if not self.renewer.leases_ok.is_set():
            return "leases cannot be renewed (database unreachable?)"
        now = time.monotonic()
        for ctx in ctxs:
            if ctx.is_cancelled():
                return "its run was given up before a thread was free"
            if ctx.lease_deadline - now < START_MARGIN:
                return "its lease runs out before it could be renewed"
        return None

    async def _not_started(self, runs: list[Run], why: str) -> None:
        """Sync handlers that never started: hand their jobs back unspent (or let the rescue do it)."""
        for run in runs:
            run.lost = True
        log.warning("jobs %s not started: %s; handed back", [r.job.id for r in runs], why)
        try:
            await self.bridge.call(self.app.backend.jobs_release, [r.ctx.lease for r in runs])
        except BackendError as exc:
            log.warning("could not hand back %d jobs (%s); they are rescued when their leases expire", len(runs), exc)

    def culprit(self, task: asyncio.Task[Any] | None) -> str:
        """Which job a task of this loop runs (the one blocking the loop when it is called from the renewer)."""
        if task is None:
            return "no job (the worker's own code)"
        job_id = self.executor.handler_tasks.get(task)
        for run in list(self.running.values()):
            if run.task is task or run.job.id == job_id:
                return f"job {run.job.id} ({run.job.type})"
        return f"task {task.get_name()} (not a job)"

    def _cancelled_elsewhere(self, job_ids: list[int]) -> None:
        """An operator cancelled running jobs (any thread): stop those this worker runs."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop_runs, job_ids)

    def _stop_runs(self, job_ids: list[int]) -> None:
        if not job_ids:  # the notifications may have missed some: the next renewal, asked for now, finds them
            self.renewer.renew_soon()
        for job_id in job_ids:
            run = self.running.get(job_id)
            if run is not None and not run.task.done():
                give_up(run, "cancelled by an operator")

    def _check_stuck(self) -> None:
        """Too many threads held by sync handlers that ran past their timeout: stop claiming,
        let the other runs finish, and ask for a fresh process (threads cannot be stopped)."""
        if self._stopping:
            return  # shutting down anyway (runs released at the end of the grace period hold threads too)
        if len(self.executor.stuck) >= max(1, int(self.concurrency * STUCK_SHARE)) and not self.replace:
            log.warning(
                "%d sync handlers overran their timeout and still hold their threads; "
                "stopping this worker to be replaced by a fresh process", len(self.executor.stuck),
            )
            self.replace = True
            self._begin_stop()

    # -- batch handlers (conveyor/batch.py) --------------------------------------------

    async def _dispatch_batches(self, jobs: list[Job]) -> None:
        """Start single jobs as usual; group batch types' jobs, topping up a short batch with one
        more claim of its type, and run each group as one handler call in one slot."""
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            if job.type in self.batch_sizes:
                groups.setdefault(job.type, []).append(job)
            else:
                self._start(job)
        for job_type, members in groups.items():
            size = self.batch_sizes[job_type]
            chunks = [members[i : i + size] for i in range(0, len(members), size)]
            if len(chunks[-1]) < size and not self._stopping and self.claimable_queues:
                params = ClaimParams(self.id, self.claimable_queues, size - len(chunks[-1]), self.lease_seconds, self.limits, (job_type,), self.aging)
                try:
                    chunks[-1].extend(await self._claim(params))
                except BackendError as exc:
                    log.warning("could not top up a batch of %s (%s); running it short", job_type, exc)
            for chunk in chunks:
                self._start_batch(chunk)

    def _start_batch(self, jobs: list[Job]) -> None:
        runs = [Run(job, JobContext(self.app, job, self.id)) for job in jobs]
        task = asyncio.create_task(self._execute_batch(runs), name=f"batch-{jobs[0].type}-{jobs[0].id}")
        for run in runs:
            run.task = task
            self.running[run.job.id] = run
        self.batch_extra += len(runs) - 1

    async def _execute_batch(self, runs: list[Run]) -> None:
        try:
            results = await self.executor.run_batch([r.job for r in runs], [r.ctx for r in runs])
        except NotStarted as exc:
            await self._not_started(runs, str(exc))
            return
        except asyncio.CancelledError:
            kept = [r.ctx.lease for r in runs if not (r.lost or r.released)]
            if kept and any(r.lost for r in runs):  # one lease was lost: hand the others back unspent
                try:
                    await self.bridge.call(self.app.backend.jobs_release, kept)
                except BackendError:
                    pass  # their leases expire and they are rescued
            return
        finally:
            for run in runs:
                self.running.pop(run.job.id, None)
            self.batch_extra -= len(runs) - 1
            self._slot.set()
        for run, result in zip(runs, results):
            if not (run.lost or run.released):
                self.completer.add(result)
                self._log(result)

    def _log(self, r: RunResult) -> None:
        outcome = r.outcome
        if type(outcome) is Retry or type(outcome) is Dead:
            # every failed run, with its traceback, where a logging-based error reporter sees it
            log.log(
                logging.WARNING if type(outcome) is Retry else logging.ERROR,
                "job %s %s attempt %d/%d failed%s: %s%s",
                r.job.id, r.job.type, r.job.attempt, r.job.max_attempts,
                f", retrying in {outcome.delay:.3g} s" if type(outcome) is Retry else ", dead",
                outcome.error, f"\n{outcome.traceback}" if outcome.traceback else "",
                extra={"job_id": r.job.id, "job_type": r.job.type, "queue": r.job.queue, "attempt": r.job.attempt, "outcome": outcome_name(outcome)},
            )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "job %s %s queue=%s attempt=%d outcome=%s duration_ms=%.1f",
                r.job.id,
                r.job.type,
                r.job.queue,
                r.job.attempt,
                outcome_name(r.outcome),
                r.duration * 1000,
                extra={
                    "job_id": r.job.id,
                    "job_type": r.job.type,
                    "queue": r.job.queue,
                    "attempt": r.job.attempt,
                    "outcome": outcome_name(r.outcome),
                    "duration_ms": round(r.duration * 1000, 1),
                },
            )

    # -- stopping -----------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self.stopped.is_set()

    def _on_signal(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        if self.signals and now - self.first_signal_at < DUPLICATE_SIGNAL:
            return  # one signal delivered twice (to the process and to its group), not a second request
        self.signals += 1
        if self.signals > 1:
            log.warning("second %s: stopping at once; leases will expire and the jobs be rescued", sig.name)
            os._exit(1)
        self.first_signal_at = now
        log.info("%s: no new jobs; finishing %d running within %.0f s", sig.name, len(self.running), self.settings.shutdown_grace)
        self._begin_stop()

    def _begin_stop(self) -> None:
        self.stopped.set()
        self._wake.set()
        self._slot.set()

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then hand the rest back."""
        deadline = time.monotonic() + self.settings.shutdown_grace
        while self.running and time.monotonic() < deadline:
            await asyncio.wait([r.task for r in self.running.values()], timeout=deadline - time.monotonic())
        leftover = list(self.running.values())
        if not leftover:
            return
        for run in leftover:
            run.released = True
            run.ctx.cancelled.set()
            run.task.cancel()
        try:
            count = await self.bridge.call(self.app.backend.jobs_release, [r.ctx.lease for r in leftover])
            log.warning("released %d jobs still running after the grace period", count)
        except BackendError as exc:
            log.warning("could not release %d jobs (%s); they will be rescued when their leases expire", len(leftover), exc)


def flow_control(app: Conveyor, queues: tuple[str, ...]) -> tuple[tuple[ClaimLimit, ...], tuple[tuple[str, float], ...], dict[str, int]]:
    """What this worker's claims must respect (limits, aging) and which job types run in batches."""
    limits = tuple(lim for lim in app.registry.limits() if lim.queue is None or lim.queue in queues)
    aging = tuple((q, p.aging) for q, p in sorted(app.registry.queue_policies.items()) if p.aging is not None and q in queues)
    batches = {spec.name: spec.options.batch for spec in app.registry if spec.options.batch is not None}
    return limits, aging, batches


def close_loop(loop: asyncio.AbstractEventLoop, margin: float) -> None:
    """Cancel what is left on the loop, wait at most ``margin`` for it, then close the loop anyway."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=margin))
            if pending:
                log.warning("%d handler tasks ignored their cancellation; left behind at exit", len(pending))
        loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=margin))
    finally:
        loop.close()  # its default executor is not waited for: a handler's thread may never return
