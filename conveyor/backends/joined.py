"""Joining the caller's transaction: the driver connection inside an ORM's session, and async connections.

``enqueue(..., connection=X)`` writes the job with the backend's own statements on the caller's
connection, so the job commits or rolls back with the caller's rows. ``X`` may be the driver's
connection (``sqlite3.Connection``, ``psycopg.Connection``), a SQLAlchemy ``Session`` or
``Connection``, or Django's connection wrapper (``django.db.connection``): each is unwrapped
here to the driver connection it holds, inside the transaction it has open.

Async callers hand an async driver connection (``psycopg.AsyncConnection``, ``aiosqlite``), a
SQLAlchemy ``AsyncSession``/``AsyncConnection``, or an ``app.atransaction()``. The backends are
sync (one I/O colour, STYLE 15), so the insert runs on a worker thread against ``AsyncJoined``,
a blocking face over the async connection whose every statement is awaited on the caller's event
loop: one bridge, the same statements as every other enqueue, one thread hop per statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from conveyor.errors import OptionError


def sync_connection(connection: Any) -> Any:
    """The driver connection to write on, from what a caller passed as ``connection=``."""
    if connection is None:
        return None
    module = type(connection).__module__
    if module.startswith("sqlalchemy."):
        if hasattr(connection, "sync_session") or hasattr(connection, "sync_connection"):
            raise OptionError(
                "connection", "a SQLAlchemy async session or connection goes to `await app.aenqueue(..., connection=...)`, not enqueue"
            )
        if hasattr(connection, "get_bind"):  # a Session: its connection, inside the session's transaction
            connection = connection.connection()
        if not hasattr(connection, "in_transaction") or not hasattr(connection, "connection"):
            raise OptionError("connection", f"cannot join a {type(connection).__qualname__}; pass a Session or a Connection")
        return connection.connection.driver_connection
    if module.startswith("django.") and hasattr(connection, "ensure_connection"):  # Django's connection (or its proxy)
        connection.ensure_connection()
        return connection.connection
    if hasattr(connection, "driver_connection") and not hasattr(connection, "execute"):
        return connection.driver_connection
    return connection


async def async_connection(connection: Any) -> Any:
    """The async driver connection to write on, from an async session, connection or driver connection."""
    module = type(connection).__module__
    if module.startswith("sqlalchemy."):
        if hasattr(connection, "sync_session"):  # AsyncSession: begins its transaction if none is open
            connection = await connection.connection()
        if not hasattr(connection, "get_raw_connection"):
            raise OptionError("connection", f"cannot join a {type(connection).__qualname__}; pass an AsyncSession or AsyncConnection")
        raw = await connection.get_raw_connection()
        return raw.driver_connection
    return connection


def is_async_connection(connection: Any) -> bool:
    """Whether ``connection`` must be driven with ``await`` (an async driver or async SQLAlchemy object)."""
    module = type(connection).__module__
    if module.startswith("sqlalchemy."):
        return hasattr(connection, "sync_session") or hasattr(connection, "sync_connection")
    package = module.split(".")[0]
    if package == "psycopg":
        return asyncio.iscoroutinefunction(getattr(connection, "execute", None))
    return package == "aiosqlite"


class Fetched:
    """A statement's rows and row count, read on the event loop and handed to the worker thread."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[Any]:
        return self.rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class AsyncJoined:
    """A blocking connection face over an async driver connection, used from a worker thread only."""

    def __init__(self, connection: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.loop = loop
        self.aiosqlite = type(connection).__module__.startswith("aiosqlite")

    def _wait(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def execute(self, sql: str, params: Any = ()) -> Fetched:
        return self._wait(self._execute(sql, params))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Sequence[Any]) -> None:
        self._wait(self._executemany(sql, rows))

    async def _execute(self, sql: str, params: Any) -> Fetched:
        cursor = await self.connection.execute(sql, params)
        try:
            rows = list(await cursor.fetchall()) if cursor.description is not None else []
            return Fetched(rows, cursor.rowcount)
        finally:
            if self.aiosqlite:
                await cursor.close()

    async def _executemany(self, sql: str, rows: Sequence[Any]) -> None:
        if self.aiosqlite:
            await self.connection.executemany(sql, rows)
            return
        async with self.connection.cursor() as cursor:
            await cursor.executemany(sql, rows)
