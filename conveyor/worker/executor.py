"""Runs one claimed job: checks it can run, calls its handler under its timeout, and decides."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import FinishParams
from conveyor.batch import BatchContext, item_outcomes
from conveyor.context import JobContext
from conveyor.errors import PayloadError, ResultError
from conveyor.job import Job, JobState
from conveyor.options import decode_backoff
from conveyor.outcome import Cancelled, Complete, Dead, Outcome, Retry, Snoozed, decide, describe, failure
from conveyor.payload import decode
from conveyor.registry import JobSpec
from conveyor.result import encode_result
from conveyor.retry import Backoff

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


class JobTimeout(Exception):
    """The handler ran past its timeout."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: its outcome (what events and logs need to know) and its write-back for the store."""

    job: Job
    outcome: Outcome
    write: FinishParams
    duration: float


class Executor:
    """Turns a claimed Job into a RunResult; never raises (a run's failure is data)."""

    def __init__(self, app: Conveyor, worker_id: str, threads: ThreadPoolExecutor, overran: Callable[[], None] = lambda: None) -> None:
        self.app = app
        self.worker_id = worker_id
        self.threads = threads
        self.overran = overran  # told each time a thread is left held
        self._backoffs: dict[tuple[str, str | None], Backoff] = {}
        self.stuck: set[asyncio.Future[Any]] = set()
        """Sync handlers that ran past their timeout and still hold a thread (Python cannot stop
        a thread): each is one slot fewer until it returns or the worker is replaced."""

    def _overran(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self.stuck.add(future)
            future.add_done_callback(self.stuck.discard)
            self.overran()

    async def run(self, job: Job, ctx: JobContext) -> RunResult:
        started = time.monotonic()
        outcome = await self._decide(job, ctx)
        duration = time.monotonic() - started
        return self._result(job, ctx, outcome, duration)

    def _result(self, job: Job, ctx: JobContext, outcome: Outcome, duration: float) -> RunResult:
        """The run's RunResult; a result that cannot be stored fails the run (never a silent None)."""
        try:
            return RunResult(job, outcome, self.write(job, ctx, outcome), duration)
        except ResultError as exc:
            spec = self.app.registry.get(job.type)  # it ran, so it is declared
            failed = failure(job.attempt, job.max_attempts, self._backoff(spec, job.backoff), describe(exc))
            return RunResult(job, failed, self.write(job, ctx, failed), duration)

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
        timeout = job.timeout
        func = spec.func
        try:
            if spec.parent_arg is not None:  # the step asked for the results of the jobs it follows
                parents = await ctx.aparent_results()
                func = partial(func, **{spec.parent_arg: parents if spec.parent_arg == "parent_results" else next(iter(parents.values()), None)})
            if spec.is_async:
                result = await asyncio.wait_for(func(*args), timeout) if timeout else await func(*args)
            else:
                future = asyncio.get_running_loop().run_in_executor(self.threads, func, *args)
                result = await asyncio.wait_for(asyncio.shield(future), timeout) if timeout else await future
        except TimeoutError:
            ctx.cancelled.set()
            if not spec.is_async:
                self._overran(future)
            error: BaseException = JobTimeout(f"timed out after {timeout:g} s")
            return decide(job.attempt, job.max_attempts, backoff, error=error)
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
                if spec.is_async:
                    result = await asyncio.wait_for(spec.func(*args), timeout) if timeout else await spec.func(*args)
                else:
                    future = asyncio.get_running_loop().run_in_executor(self.threads, spec.func, *args)
                    result = await asyncio.wait_for(asyncio.shield(future), timeout) if timeout else await future
            except TimeoutError:
                if not spec.is_async:
                    self._overran(future)
                error = JobTimeout(f"timed out after {timeout:g} s")
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


def outcome_name(outcome: Outcome) -> str:
    return {Complete: "completed", Retry: "retry", Dead: "dead", Snoozed: "snoozed", Cancelled: "cancelled"}[type(outcome)]
