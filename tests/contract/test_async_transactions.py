"""Async transactions: ``app.atransaction()`` and ``aenqueue(connection=...)`` on async drivers — on both backends."""

from __future__ import annotations

from typing import Any

import aiosqlite
import psycopg
import pytest

from conveyor import Conveyor, OptionError
from tests.contract.jobs import declare


@pytest.fixture(autouse=True)
def _jobs(app: Conveyor) -> None:
    declare(app)
    with app.transaction() as tx:
        tx.execute("CREATE TABLE shop_orders (id TEXT PRIMARY KEY)")


def mark(app: Conveyor) -> str:
    return "?" if app.backend.flavour == "sqlite" else "%s"  # type: ignore[attr-defined]


def orders(app: Conveyor) -> int:
    with app.transaction() as tx:
        return int(tx.execute("SELECT count(*) FROM shop_orders").fetchone()[0])


async def test_atransaction_commits_rows_and_jobs_together(app: Conveyor) -> None:
    async with app.atransaction() as tx:
        await tx.execute(f"INSERT INTO shop_orders (id) VALUES ({mark(app)})", ("o1",))
        one = await app.aenqueue("plain", {"order": "o1"}, connection=tx)
        many = await app.aenqueue_many([("plain", {"n": 1}), ("send_email", {"n": 2})], connection=tx)
        assert [r[0] for r in await tx.execute("SELECT id FROM shop_orders")] == ["o1"]
    assert orders(app) == 1
    assert app.admin.jobs.get(one).payload == {"order": "o1"}
    assert sorted(j.id for j in app.admin.jobs.list()) == sorted([one, *many])


async def test_atransaction_rolls_back_rows_and_jobs_together(app: Conveyor) -> None:
    with pytest.raises(RuntimeError, match="declined"):
        async with app.atransaction() as tx:
            await tx.execute(f"INSERT INTO shop_orders (id) VALUES ({mark(app)})", ("o1",))
            await app.aenqueue("plain", {"order": "o1"}, connection=tx)
            raise RuntimeError("payment declined")
    assert orders(app) == 0 and app.admin.jobs.count() == 0


async def test_concurrent_atransactions_each_keep_their_own(app: Conveyor) -> None:
    """Two blocks open at once (the second waits on SQLite's write lock) do not share a connection."""
    import asyncio

    async def place(order: str, fail: bool) -> None:
        async with app.atransaction() as tx:
            await tx.execute(f"INSERT INTO shop_orders (id) VALUES ({mark(app)})", (order,))
            await app.aenqueue("plain", {"order": order}, connection=tx)
            if fail:
                raise RuntimeError(order)

    results = await asyncio.gather(place("a", False), place("b", True), place("c", False), return_exceptions=True)
    assert [type(r) for r in results] == [type(None), RuntimeError, type(None)]
    assert orders(app) == 2
    assert sorted(j.payload["order"] for j in app.admin.jobs.list()) == ["a", "c"]


async def open_async_driver(app: Conveyor, database_url: str) -> Any:
    if app.backend.flavour == "sqlite":  # type: ignore[attr-defined]
        return await aiosqlite.connect(database_url.removeprefix("sqlite:///"))
    return await psycopg.AsyncConnection.connect(database_url)


async def test_aenqueue_joins_an_async_driver_transaction(app: Conveyor, database_url: str) -> None:
    app.admin.jobs.count()  # the schema exists before the caller's own connection opens
    conn = await open_async_driver(app, database_url)
    try:
        await conn.execute(f"INSERT INTO shop_orders (id) VALUES ({mark(app)})", ("o1",))
        job_id = await app.aenqueue("process_order", {"order_id": "o1", "email": "a@b.c"}, connection=conn)
        await app.aenqueue_many([("plain", {"n": 1}), ("plain", {"n": 2})], connection=conn, priority=4)
        assert app.admin.jobs.count() == 0  # not visible before the caller commits
        await conn.commit()
        assert app.admin.jobs.get(job_id).queue == "orders"
        assert app.admin.jobs.count() == 3 and orders(app) == 1

        await conn.execute(f"INSERT INTO shop_orders (id) VALUES ({mark(app)})", ("o2",))
        await app.aenqueue("plain", {"order": "o2"}, connection=conn)
        await conn.rollback()
        assert app.admin.jobs.count() == 3 and orders(app) == 1
    finally:
        await conn.close()


async def test_aenqueue_refuses_a_sync_connection_and_validates_first(app: Conveyor) -> None:
    with app.transaction() as tx, pytest.raises(OptionError, match="connection.*aenqueue joins an async transaction"):
        await app.aenqueue("plain", {}, connection=tx)
    with pytest.raises(OptionError, match="not open"):
        await app.aenqueue("plain", {}, connection=app.atransaction())
    assert app.admin.jobs.count() == 0
