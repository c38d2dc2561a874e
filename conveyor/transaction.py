"""Async transactions: ``app.atransaction()``, and ``aenqueue`` joining the caller's async transaction.

The backends are sync (STYLE 15). An ``async with app.atransaction() as tx`` block holds one of
the store's sync transactions on a thread of its own for the whole block: every statement of
the block (``await tx.execute``, ``await app.aenqueue(..., connection=tx)``) runs on that thread,
so SQLite's per-thread connection and its ``BEGIN IMMEDIATE`` stay with the block, and the event
loop never blocks on the database. Threads are leased, one block at a time, and kept for reuse,
so at most as many connections are opened as blocks ever ran at once.

>>> async with app.atransaction() as tx:
...     await tx.execute("INSERT INTO orders (id) VALUES (?)", ("o1",))
...     await app.aenqueue("send_confirmation", {"order_id": "o1"}, connection=tx)
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from conveyor.backends.joined import AsyncJoined, async_connection, is_async_connection
from conveyor.errors import OptionError

if TYPE_CHECKING:
    from conveyor.backends.base import Backend, Inserted, NewJob

T = TypeVar("T")


class TransactionThreads:
    """Single-thread executors leased to one async transaction at a time, kept for the next."""

    def __init__(self) -> None:
        self._idle: list[ThreadPoolExecutor] = []
        self._all: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def lease(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            executor = ThreadPoolExecutor(1, thread_name_prefix="conveyor-tx")
            self._all.append(executor)
            return executor

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            self._idle.append(executor)

    def close(self) -> None:
        with self._lock:
            executors, self._all, self._idle = self._all, [], []
        for executor in executors:
            executor.shutdown(wait=True)


class AsyncTransaction:
    """One of the store's transactions, driven from async code; pass it as ``connection=``.

    Commits when the block ends, rolls back when it raises.
    """

    def __init__(self, backend: Backend, threads: TransactionThreads) -> None:
        self.backend = backend
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._context: Any = None
        self.connection: Any = None  # the driver connection, used on this transaction's thread only

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Call ``func(*args)`` on the transaction's thread (where ``self.connection`` may be used)."""
        if self._executor is None or self.connection is None:
            raise OptionError("connection", "this async transaction is not open (use it inside `async with app.atransaction()`)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(func, *args))

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Run one statement of your own in the transaction; its rows (empty for a write)."""

        def statement() -> list[Any]:
            cursor = self.connection.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description is not None else []

        return await self.run(statement)

    async def __aenter__(self) -> Self:
        self._executor = self._threads.lease()
        loop = asyncio.get_running_loop()
        try:
            self._context = self.backend.transaction()
            self.connection = await loop.run_in_executor(self._executor, self._context.__enter__)
        except BaseException:
            self._threads.give_back(self._executor)
            self._executor = None
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        executor, self._executor = self._executor, None
        assert executor is not None
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._context.__exit__, kind, error, tb)
        finally:
            self.connection = None
            self._threads.give_back(executor)


async def ainsert(backend: Backend, rows: list[NewJob], connection: Any) -> list[Inserted]:
    """Insert ``rows`` from async code: alone, in an ``atransaction()``, or in the caller's async transaction."""
    if not rows:
        return []
    if connection is None:
        return await asyncio.to_thread(backend.jobs_insert, rows)
    if isinstance(connection, AsyncTransaction):
        return await connection.run(backend.jobs_insert, rows, connection.connection)
    if is_async_connection(connection):
        joined = AsyncJoined(await async_connection(connection), asyncio.get_running_loop())
        return await asyncio.to_thread(backend.jobs_insert, rows, joined)
    raise OptionError(
        "connection",
        f"aenqueue joins an async transaction (app.atransaction(), psycopg.AsyncConnection, aiosqlite, "
        f"a SQLAlchemy AsyncSession or AsyncConnection), not a {type(connection).__qualname__}; a sync connection goes to enqueue"
    )
