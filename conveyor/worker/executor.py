"""Runs one claimed job: checks it can run, calls its handler under its timeout, and decides."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import FinishParams
from conveyor.batch import BatchContext, item_outcomes
from conveyor.context import JobContext
from conveyor.errors import PayloadError, ResultError
from conveyor.job import Job, JobState
from conveyor.middleware import RunInfo
from conveyor.options import decode_backoff
from conveyor.outcome import Cancelled, Complete, Dead, Outcome, Retry, Snoozed, decide, describe, failure
from conveyor.payload import decode
from conveyor.registry import JobSpec
from conveyor.result import encode_result
from conveyor.retry import Backoff

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


CANCEL_GRACE = 1.0
"""Seconds an async handler gets to finish after it is cancelled at its timeout; one that swallows
the cancellation is then left behind (its run ends, its lease and slot are given up)."""


class JobTimeout(Exception):
    """The handler ran past its timeout."""


class NotStarted(Exception):
    """A sync handler's call was given up before a thread took it: it never ran."""


class SyncCall:
    """A sync handler's call as queued for a thread: when a thread takes it, it starts only if its
    run is still wanted (not timed out, lease not lost, leases renewable), and never after ``abandon``.
    """

    __slots__ = ("args", "ctxs", "func", "lock", "may_start", "state", "why")

    QUEUED, STARTED, ABANDONED = 0, 1, 2

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], ctxs: list[JobContext], may_start: Callable[[list[JobContext]], str | None]) -> None:
        self.func = func
        self.args = args
        self.ctxs = ctxs
        self.may_start = may_start
        self.lock = threading.Lock()
        self.state = self.QUEUED
        self.why = "given up before it started"

    def __call__(self) -> Any:
        with self.lock:
            if self.state == self.QUEUED:
                refused = self.may_start(self.ctxs)
                if refused is not None:
                    self.why = refused
                self.state = self.ABANDONED if refused is not None else self.STARTED
            if self.state == self.ABANDONED:
                raise NotStarted(self.why)
        return self.func(*self.args)

    def abandon(self, why: str) -> bool:
        """Give the call up; True when it had already started (its thread stays held until it returns)."""
        with self.lock:
            if self.state == self.QUEUED:
                self.state = self.ABANDONED
                self.why = why
            return self.state == self.STARTED


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: its outcome (what events and logs need to know) and its write-back for the store."""

    job: Job
    outcome: Outcome
    write: FinishParams
    duration: float


class Executor:
    """Turns a claimed Job into a RunResult; never raises (a run's failure is data)."""

    def __init__(
        self,
        app: Conveyor,
        worker_id: str,
        threads: ThreadPoolExecutor,
        overran: Callable[[], None] = lambda: None,
        may_start: Callable[[list[JobContext]], str | None] = lambda ctxs: None,
        freed: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.worker_id = worker_id
        self.threads = threads
        self.overran = overran  # told each time a thread is left held
        self.may_start = may_start  # asked on the handler's thread just before a sync handler starts
        self.freed = freed  # told when a held handler returns at last (its slot is free again)
        self.handler_tasks: dict[asyncio.Task[Any], int] = {}
        """Async handlers running in a task of their own (those with a timeout), by job id."""
        self._backoffs: dict[tuple[str, str | None], Backoff] = {}
        self.stuck: set[asyncio.Future[Any]] = set()
        """Handlers given up while still running: sync ones hold a thread (Python cannot stop a
        thread), async ones swallowed their cancellation. Each is one slot fewer until it returns
        or the worker is replaced."""

    def _overran(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self.stuck.add(future)
            future.add_done_callback(self._released)
            self.overran()

    def _released(self, future: asyncio.Future[Any]) -> None:
        self.stuck.discard(future)
        self.freed()

    async def _invoke(self, spec: JobSpec, args: tuple[Any, ...], timeout: float | None, ctxs: list[JobContext]) -> Any:
        """Call the handler; at ``timeout`` end the run whatever the handler does (``JobTimeout``)."""
        if spec.is_async:
            if not timeout:
                return await spec.func(*args)
            return await self._invoke_async(spec, args, timeout, ctxs)
        call = SyncCall(spec.func, args, ctxs, self.may_start)
        future = asyncio.get_running_loop().run_in_executor(self.threads, call)
        try:
            return await (asyncio.wait_for(asyncio.shield(future), timeout) if timeout else asyncio.shield(future))
        except TimeoutError:
            self._give_up(call, future, ctxs, "timed out before a thread was free")
            raise JobTimeout(f"timed out after {timeout:g} s") from None
        except asyncio.CancelledError:
            self._give_up(call, future, ctxs, "given up before a thread was free")
            raise

    def _give_up(self, call: SyncCall, future: asyncio.Future[Any], ctxs: list[JobContext], why: str) -> None:
        for ctx in ctxs:
            ctx.cancelled.set()
        if call.abandon(why):
            self._overran(future)  # running in its thread: that thread stays held
        else:
            future.add_done_callback(_retrieve)  # it will raise NotStarted; nobody awaits it now

    async def _invoke_async(self, spec: JobSpec, args: tuple[Any, ...], timeout: float, ctxs: list[JobContext]) -> Any:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(spec.func(*args))
        self.handler_tasks[task] = ctxs[0].job_id
        task.add_done_callback(self._forget_task)
        try:
            done, _ = await asyncio.wait((task,), timeout=timeout)
        except asyncio.CancelledError:  # lease lost or shutdown: the run ends now, whatever the handler does
            self._cancel(task, ctxs)
            asyncio.get_running_loop().call_later(CANCEL_GRACE, self._overran, task)
            raise
        if done:
            return task.result()
        self._cancel(task, ctxs)
        done, _ = await asyncio.wait((task,), timeout=CANCEL_GRACE)
        if not done:
            self._overran(task)  # counted like a held thread while it runs on
            log.warning(
                "job %s ignored its cancellation at its %g s timeout and keeps running; its run is over "
                "(lease and slot given up), the handler is left behind", ctxs[0].job_id, timeout,
            )
        raise JobTimeout(f"timed out after {timeout:g} s")

    def _cancel(self, task: asyncio.Task[Any], ctxs: list[JobContext]) -> None:
        for ctx in ctxs:
            ctx.cancelled.set()
        task.cancel()
        task.add_done_callback(_retrieve)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self.handler_tasks.pop(task, None)

    async def run(self, job: Job, ctx: JobContext) -> RunResult:
        started = time.monotonic()
        outcome = await self._decide(job, ctx)
        duration = time.monotonic() - started
        if self.app.middleware:
            self.app.middleware.finished(run_info(job, outcome, duration))
        return self._result(job, ctx, outcome, duration)

    def _result(self, job: Job, ctx: JobContext, outcome: Outcome, duration: float) -> RunResult:
        """The run's RunResult; a result that cannot be stored fails the run (never a silent None)."""
        try:
            return RunResult(job, outcome, self.write(job, ctx, outcome), duration)
        except ResultError as exc:
            spec = self.app.registry.get(job.type)  # it ran, so it is declared
            failed = failure(job.attempt, job.max_attempts, self._backoff(spec, job.backoff), describe(exc))
            return RunResult(job, failed, self.write(job, ctx, failed), duration)
        except Exception as exc:  # noqa: BLE001 (a result that cannot even be encoded, nested past the recursion limit say: the run's failure is data, never a lost run)
            dead = Dead(f"the run's outcome could not be stored: {describe(exc)}", None)
            return RunResult(job, dead, self.write(job, ctx, dead), duration)

    async def _decide(self, job: Job, ctx: JobContext) -> Outcome:
        if job.corrupt:
            return Dead(f"corrupt job row, moved aside: {job.corrupt}", None)
        spec = self.app.registry.find(job.type)
        if spec is None:
            return Dead(f"unknown job type {job.type!r}: no handler is declared for it in this worker", None)
        try:
            payload = decode(job.type, spec.model, job.payload)
        except PayloadError as exc:
            return Dead(f"payload no longer valid: {exc}", None)
        backoff = self._backoff(spec, job.backoff)
        args: tuple[Any, ...] = (payload, ctx) if spec.takes_context else (payload,)
        try:
            if spec.parent_arg is not None:  # the step asked for the results of the jobs it follows
                parents = await ctx.aparent_results()
                chosen = parents if spec.parent_arg == "parent_results" else next(iter(parents.values()), None)
                spec = replace(spec, func=partial(spec.func, **{spec.parent_arg: chosen}))
            if self.app.middleware:  # the handler wrapped in the run hooks (conveyor/middleware.py)
                spec = replace(spec, func=self.app.middleware.wrap(spec.func, spec.is_async, ctx))
            result = await self._invoke(spec, args, job.timeout, [ctx])
        except NotStarted:
            raise
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise
        except Exception as exc:  # noqa: BLE001 (a handler's failure is the run's outcome)
            return decide(job.attempt, job.max_attempts, backoff, error=exc)
        return decide(job.attempt, job.max_attempts, backoff, result=result)

    def _backoff(self, spec: JobSpec, override: str | None) -> Backoff:
        """The job's backoff strategy, parsed once per job type and override, not once per run."""
        key = (spec.name, override)
        strategy = self._backoffs.get(key)
        if strategy is None:
            strategy = self._backoffs[key] = decode_backoff(override) if override else spec.options.backoff_strategy
        return strategy

    async def run_batch(self, jobs: list[Job], ctxs: list[JobContext]) -> list[RunResult]:
        """One call of a batch handler for ``jobs`` (one type); a RunResult per job."""
        started = time.monotonic()
        outcomes = await self._decide_batch(jobs, ctxs)
        duration = time.monotonic() - started
        if self.app.middleware:
            for job, o in zip(jobs, outcomes):
                self.app.middleware.finished(run_info(job, o, duration))
        return [self._result(job, ctx, o, duration) for job, ctx, o in zip(jobs, ctxs, outcomes)]

    async def _decide_batch(self, jobs: list[Job], ctxs: list[JobContext]) -> list[Outcome]:
        spec = self.app.registry.find(jobs[0].type)
        if spec is None:
            return [Dead(f"unknown job type {jobs[0].type!r}: no handler is declared for it in this worker", None)] * len(jobs)
        decisions: dict[int, Outcome] = {}
        payloads: list[Any] = []
        live: list[int] = []
        for i, job in enumerate(jobs):
            try:
                payloads.append(decode(job.type, spec.model, job.payload))
                live.append(i)
            except PayloadError as exc:
                decisions[i] = Dead(f"payload no longer valid: {exc}", None)
        if live:
            batch = BatchContext([ctxs[i] for i in live])
            args: tuple[Any, ...] = (payloads, batch) if spec.takes_context else (payloads,)
            timeout = max([t for i in live if (t := jobs[i].timeout)], default=None)
            result: Any = None
            error: BaseException | None = None
            try:
                result = await self._invoke(spec, args, timeout, [ctxs[i] for i in live])
            except NotStarted:
                raise
            except asyncio.CancelledError:
                batch.cancelled.set()
                for ctx in ctxs:
                    ctx.cancelled.set()
                raise
            except Exception as exc:  # noqa: BLE001 (a handler's failure is the run's outcome)
                error = exc
            if isinstance(error, JobTimeout):
                batch.cancelled.set()
                for ctx in ctxs:
                    ctx.cancelled.set()
            for i, (item_result, item_error) in zip(live, item_outcomes(len(live), result, error)):
                job = jobs[i]
                backoff = decode_backoff(job.backoff) if job.backoff else spec.options.backoff_strategy
                decisions[i] = decide(job.attempt, job.max_attempts, backoff, result=item_result, error=item_error)
        return [decisions[i] for i in range(len(jobs))]

    def write(self, job: Job, ctx: JobContext, outcome: Outcome) -> FinishParams:
        """The store's write-back of ``outcome``; raises ResultError if its result cannot be stored."""
        lease = ctx.lease
        if type(outcome) is Complete:  # the common case first, its fields in order (the keyword form costs twice as much)
            stored = encode_result(outcome.result, self.app.settings.max_result_bytes)
            return FinishParams(lease, JobState.COMPLETED, 0.0, None, None, None, stored, False, tuple(ctx.children))
        match outcome:
            case Retry(delay=delay, error=error, traceback=tb):
                return FinishParams(lease, JobState.PENDING, delay=delay, error=error, traceback=tb, worker_id=self.worker_id)
            case Dead(error=error, traceback=tb):
                return FinishParams(lease, JobState.DEAD, error=error, traceback=tb, worker_id=self.worker_id)
            case Snoozed(delay=delay):
                return FinishParams(lease, JobState.PENDING, delay=delay, refund=True)
            case Cancelled(reason=reason):
                return FinishParams(lease, JobState.CANCELLED, error=f"cancelled: {reason}", worker_id=self.worker_id)
        raise AssertionError(outcome)


def run_info(job: Job, outcome: Outcome, duration: float) -> RunInfo:
    """What ``Middleware.finished`` is told about a run."""
    if isinstance(outcome, Retry | Dead):
        return RunInfo(job, outcome_name(outcome), duration, outcome.error, outcome.traceback)
    if isinstance(outcome, Cancelled):
        return RunInfo(job, "cancelled", duration, f"cancelled: {outcome.reason}")
    return RunInfo(job, outcome_name(outcome), duration, result=outcome.result if isinstance(outcome, Complete) else None)


def outcome_name(outcome: Outcome) -> str:
    return {Complete: "completed", Retry: "retry", Dead: "dead", Snoozed: "snoozed", Cancelled: "cancelled"}[type(outcome)]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Read a given-up call's end so asyncio does not report it as never retrieved."""
    if not future.cancelled():
        future.exception()
