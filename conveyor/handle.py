"""JobHandle: what ``@app.job`` returns, the typed way to enqueue one job type (and still its handler).

    @app.job(queue="email", max_attempts=20)
    async def send_confirmation(p: Confirmation, ctx: JobContext) -> None: ...

    send_confirmation.enqueue(Confirmation(order_id="o1"), priority=Priority.HIGH)  # mypy checks all of it
    urgent = send_confirmation.options(queue="urgent", priority=Priority.HIGH)      # bound once, used often
    urgent.using(tx).enqueue(Confirmation(order_id="o2"))                          # inside the caller's transaction
    await send_confirmation(Confirmation(order_id="o3"), ctx)                      # still the plain handler

The handle is generic in the payload (the handler's first parameter), the handler's parameters
and its return, the way Procrastinate types ``task.defer``: a wrong payload, an unknown option or
an option of the wrong type is a mypy error, not a run-time surprise. A payload may also be a
dict, validated by the model at enqueue exactly as ``app.enqueue("name", {...})`` does: by-name
enqueue stays for producers that do not import the handlers' module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar

from typing_extensions import Unpack

from conveyor.errors import OptionError
from conveyor.options import EnqueueOptions
from conveyor.workflow import After, Step, step

if TYPE_CHECKING:
    from conveyor.app import Conveyor

PayloadT = TypeVar("PayloadT")
HandlerParams = ParamSpec("HandlerParams")
ReturnT = TypeVar("ReturnT")


class JobHandle(Generic[PayloadT, HandlerParams, ReturnT]):
    """One declared job type: enqueue it typed, build workflow steps of it, or call its handler.

    ``options(...)`` and ``using(connection)`` return a copy with those enqueue options or that
    transaction bound; options given to a call override the bound ones.
    """

    def __init__(
        self, app: Conveyor, name: str, func: Callable[HandlerParams, ReturnT],
        bound: EnqueueOptions | None = None, connection: Any = None,
    ) -> None:
        self.app = app
        self.name = name
        self.func = func
        self.bound: EnqueueOptions = bound or {}
        self.connection = connection
        functools.update_wrapper(self, func)  # __name__, __doc__, __wrapped__: tools and tests see the handler

    def __call__(self, *args: HandlerParams.args, **kwargs: HandlerParams.kwargs) -> ReturnT:
        """The handler itself, so a unit test of a handler stays a plain function call."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobHandle {self.name!r}{f' {dict(self.bound)}' if self.bound else ''}>"

    # -- binding ----------------------------------------------------------------------------

    def options(self, **options: Unpack[EnqueueOptions]) -> Self:
        """A copy that enqueues with these options unless a call overrides them."""
        return type(self)(self.app, self.name, self.func, {**self.bound, **options}, self.connection)

    def using(self, connection: Any) -> Self:
        """A copy whose enqueues join ``connection``'s open transaction (``app.transaction()`` or
        the caller's own sqlite3/psycopg connection): the jobs commit or roll back with it."""
        return type(self)(self.app, self.name, self.func, self.bound, connection)

    # -- enqueueing -------------------------------------------------------------------------

    def enqueue(self, payload: PayloadT | dict[str, Any], *, connection: Any = None, **options: Unpack[EnqueueOptions]) -> int:
        """Queue one job of this type and return its id (the existing job's id if deduplicated)."""
        return self.app.enqueue(self.name, payload, connection=self._connection(connection), **{**self.bound, **options})

    async def aenqueue(self, payload: PayloadT | dict[str, Any], **options: Unpack[EnqueueOptions]) -> int:
        """``enqueue`` for async code (the write runs on a thread, so it cannot join a transaction)."""
        self._no_connection("aenqueue")
        return await self.app.aenqueue(self.name, payload, **{**self.bound, **options})

    def enqueue_many(
        self, payloads: Iterable[PayloadT | dict[str, Any]], *, connection: Any = None, **options: Unpack[EnqueueOptions]
    ) -> list[int]:
        """Queue one job per payload, all in one transaction, with the same options."""
        jobs = [(self.name, payload) for payload in payloads]
        return self.app.enqueue_many(jobs, connection=self._connection(connection), **{**self.bound, **options})

    async def aenqueue_many(self, payloads: Iterable[PayloadT | dict[str, Any]], **options: Unpack[EnqueueOptions]) -> list[int]:
        """``enqueue_many`` for async code."""
        self._no_connection("aenqueue_many")
        return await self.app.aenqueue_many([(self.name, payload) for payload in payloads], **{**self.bound, **options})

    def step(self, payload: PayloadT | dict[str, Any], *, after: Iterable[Step | int | After] = (), **options: Unpack[EnqueueOptions]) -> Step:
        """A step of this type for ``app.enqueue_workflow`` (see ``conveyor.workflow.step``;
        ``on_failure`` there is what happens to this step when a step of ``after`` fails)."""
        merged: dict[str, Any] = {**self.bound, **options}
        return step(self.name, payload, after=after, **merged)

    def _connection(self, given: Any) -> Any:
        return self.connection if given is None else given

    def _no_connection(self, method: str) -> None:
        if self.connection is not None:
            raise OptionError("connection", f"{method} cannot join a transaction (its write runs on another thread); use enqueue")


class Declaration:
    """What ``@app.job(...)`` applies to the handler: registers it and returns its handle."""

    def __init__(self, app: Conveyor, name: str | None, options: dict[str, Any]) -> None:
        self.app = app
        self.name = name
        self.options = options

    def __call__(
        self, func: Callable[Concatenate[PayloadT, HandlerParams], ReturnT]
    ) -> JobHandle[PayloadT, Concatenate[PayloadT, HandlerParams], ReturnT]:
        spec = self.app.registry.declare(func, self.name, self.options)
        return JobHandle(self.app, spec.name, func)


class BatchDeclaration(Declaration):
    """``@app.job(batch=n)``: the handler takes a list of payloads; each enqueue is one of them."""

    def __call__(  # type: ignore[override]  # the same, but the handler's first parameter is a list
        self, func: Callable[Concatenate[list[PayloadT], HandlerParams], ReturnT]
    ) -> JobHandle[PayloadT, Concatenate[list[PayloadT], HandlerParams], ReturnT]:
        spec = self.app.registry.declare(func, self.name, self.options)
        return JobHandle(self.app, spec.name, func)
