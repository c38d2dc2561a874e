"""Middleware: hooks around enqueue and run, in their documented order, sync and async — on both backends."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from conveyor import Conveyor, DeclarationError, JobContext, JobState, Middleware, OptionError, RunInfo
from conveyor.backends.base import NewJob
from conveyor.testing import running_worker, wait_until

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class Recorder(Middleware):
    """Records each hook with its name, carries request_id from the enqueuer to the run and on to its children."""

    def __init__(self, name: str, seen: list[Any]) -> None:
        self.name = name
        self.seen = seen
        self.lock = threading.Lock()

    def add(self, *event: Any) -> None:
        with self.lock:
            self.seen.append((self.name, *event))

    def prepare(self, job: NewJob, meta: dict[str, Any]) -> None:
        self.add("prepare", job.type)
        meta.setdefault("request_id", request_id.get())
        meta.setdefault("order", []).append(self.name)

    def enqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], list[int]]) -> list[int]:
        self.add("enqueue:before", len(jobs))
        ids = call_next(jobs)
        self.add("enqueue:after", ids)
        return ids

    async def aenqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], Awaitable[list[int]]]) -> list[int]:
        self.add("aenqueue:before", len(jobs))
        ids = await call_next(jobs)
        self.add("aenqueue:after", ids)
        return ids

    def run(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
        self.add("run:before", ctx.job.type, ctx.job.meta and ctx.job.meta["request_id"])
        token = request_id.set(ctx.job.meta["request_id"] if ctx.job.meta else "none")
        try:
            result = call_next()
        except Exception as exc:
            self.add("run:raised", type(exc).__name__)
            raise
        finally:
            request_id.reset(token)
        self.add("run:after", result)
        return result

    async def arun(self, ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        self.add("arun:before", ctx.job.type)
        result = await call_next()
        self.add("arun:after", result)
        return result

    def finished(self, run: RunInfo) -> None:
        self.add("finished", run.job.type, run.outcome, run.error)


def declare(app: Conveyor) -> None:
    @app.job(max_attempts=2, backoff=0)
    def parent(p: dict[str, Any], ctx: JobContext) -> str:
        ctx.enqueue("child", {"n": 1})
        return "parent done"

    @app.job(max_attempts=1)
    def child(p: dict[str, Any], ctx: JobContext) -> str:
        return "child saw " + str(ctx.job.meta and ctx.job.meta["request_id"])

    @app.job(max_attempts=1)
    async def later(p: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        return 7

    @app.job(max_attempts=1)
    def broken(p: dict[str, Any]) -> None:
        raise ValueError("no luck")


def events(seen: list[Any], name: str) -> list[Any]:
    return [e[1:] for e in seen if e[0] == name]


def test_hooks_run_in_order_and_carry_meta_from_enqueue_to_run_and_children(app: Conveyor) -> None:
    seen: list[Any] = []
    declare(app)
    app.use(Recorder("outer", seen), Recorder("inner", seen))
    token = request_id.set("req-1")
    try:
        parent_id = app.enqueue("parent", {})
    finally:
        request_id.reset(token)
    assert [e for e in seen if e[1].startswith(("prepare", "enqueue"))] == [
        ("outer", "prepare", "parent"), ("inner", "prepare", "parent"),
        ("outer", "enqueue:before", 1), ("inner", "enqueue:before", 1),
        ("inner", "enqueue:after", [parent_id]), ("outer", "enqueue:after", [parent_id]),
    ]  # fmt: skip
    assert app.admin.jobs.get(parent_id).meta == {"request_id": "req-1", "order": ["outer", "inner"]}
    seen.clear()
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state="completed") == 2, message="parent and child", timeout=60)
        wait_until(lambda: len(events(seen, "inner")) >= 7, timeout=60)  # parent: 2 around, its child's prepare, finished; child: 3
    child = app.admin.jobs.list(type="child")[0]
    assert child.result == "child saw req-1"  # the parent's run set the context its child was prepared in
    assert child.meta is not None and child.meta["request_id"] == "req-1"
    assert [e[:2] for e in seen if e[1] != "finished"][:6] == [
        ("outer", "run:before"), ("inner", "run:before"), ("outer", "prepare"), ("inner", "prepare"),
        ("inner", "run:after"), ("outer", "run:after"),
    ]  # the child's prepare runs inside the parent's run hooks
    assert ("outer", "finished", "parent", "completed", None) in seen and ("inner", "finished", "child", "completed", None) in seen


def test_async_hooks_and_failures(app: Conveyor, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []
    declare(app)
    recorder = Recorder("only", seen)

    class Flaky(Middleware):
        def finished(self, run: RunInfo) -> None:
            raise RuntimeError("reporter down")

    app.use(recorder, Flaky())

    async def produce() -> list[int]:
        return [await app.aenqueue("later", {}), *await app.aenqueue_many([("broken", {})])]

    later_id, broken_id = asyncio.run(produce())
    assert [e[1] for e in seen if "aenqueue" in e[1]] == ["aenqueue:before", "aenqueue:after", "aenqueue:before", "aenqueue:after"]
    with caplog.at_level(logging.ERROR, logger="conveyor.middleware"), running_worker(app):
        wait_until(lambda: app.admin.jobs.get(later_id).finished and app.admin.jobs.get(broken_id).finished, timeout=60)
        wait_until(lambda: len(events(seen, "only")) >= 9, timeout=60)
    assert app.admin.jobs.get(later_id).result == 7 and app.admin.jobs.get(broken_id).state is JobState.DEAD
    assert ("only", "arun:after", 7) in seen and ("only", "run:raised", "ValueError") in seen
    assert ("only", "finished", "broken", "dead", "ValueError: no luck") in seen
    assert "reporter down" in caplog.text  # a failing finished() is logged, the job unaffected


def test_a_middleware_that_raises_around_a_run_fails_the_run_and_one_that_raises_at_enqueue_stores_nothing(app: Conveyor) -> None:
    declare(app)

    class Refuse(Middleware):
        def enqueue(self, jobs: Sequence[NewJob], call_next: Callable[[Sequence[NewJob]], list[int]]) -> list[int]:
            if any(j.type == "child" for j in jobs):
                raise PermissionError("children are enqueued by parents only")
            return call_next(jobs)

        def run(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
            if ctx.job.type == "parent" and ctx.attempt == 1:
                raise ConnectionError("tracing backend unreachable")
            return call_next()

    app.use(Refuse())
    with pytest.raises(PermissionError):
        app.enqueue("child", {"n": 1})
    assert app.admin.jobs.count() == 0
    job_id = app.enqueue("parent", {})
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(job_id).state is JobState.COMPLETED, message="the second attempt", timeout=60)
    job = app.admin.jobs.get(job_id)
    assert job.attempt == 2 and job.errors[0].error == "ConnectionError: tracing backend unreachable"


def test_use_refuses_what_is_not_middleware(app: Conveyor) -> None:
    with pytest.raises(DeclarationError, match="Middleware instances"):
        app.use(object())  # type: ignore[arg-type]


def test_meta_is_stored_alike_on_both_databases_and_must_be_json(app: Conveyor) -> None:
    declare(app)

    class Odd(Middleware):
        def __init__(self, value: Any) -> None:
            self.value = value

        def prepare(self, job: NewJob, meta: dict[str, Any]) -> None:
            meta["odd"] = self.value

    app.use(Odd("nul\x00 and lone \ud800 end"))
    job_id = app.enqueue("child", {"n": 1})
    assert app.admin.jobs.get(job_id).meta == {"odd": "nul\ufffd and lone \ufffd end"}

    other = Conveyor(app.settings.database_url)
    declare(other)
    other.use(Odd(object()))
    try:
        with pytest.raises(OptionError, match="option 'meta': middleware set a value that is not JSON"):
            other.enqueue("child", {"n": 2})
    finally:
        other.close()
    assert app.admin.jobs.count() == 1
