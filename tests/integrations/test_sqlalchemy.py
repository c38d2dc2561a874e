"""SQLAlchemy: enqueue inside a Session, a Connection and an AsyncSession transaction — a real engine on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, String, create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from conveyor import Conveyor, OptionError
from tests.contract.jobs import declare


class Base(DeclarativeBase):
    pass


class ShopOrder(Base):
    __tablename__ = "sa_orders"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)


def sqlalchemy_url(database_url: str, driver: str) -> str:
    """The same database as Conveyor's URL, for SQLAlchemy (sqlite:////abs/path is the same form in both)."""
    if database_url.startswith("postgresql://"):
        return database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return database_url if driver == "sync" else database_url.replace("sqlite://", "sqlite+aiosqlite://", 1)


@pytest.fixture
def engine(app: Conveyor, database_url: str) -> Iterator[Engine]:
    declare(app)
    app.admin.jobs.count()  # Conveyor's tables exist (its first use migrates)
    engine = create_engine(sqlalchemy_url(database_url, "sync"))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def saved_orders(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(ShopOrder.id).order_by(ShopOrder.id)))


def test_session_commit_stores_the_row_and_its_jobs(app: Conveyor, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.add(ShopOrder(id="o1"))
        session.flush()
        job_id = app.enqueue("process_order", {"order_id": "o1", "email": "a@b.c"}, connection=session)
        app.enqueue_many([("plain", {"n": 1}), ("plain", {"n": 2})], connection=session)
        assert app.admin.jobs.count() == 0  # not visible to others before the commit
    assert saved_orders(engine) == ["o1"]
    assert app.admin.jobs.get(job_id).payload["order_id"] == "o1" and app.admin.jobs.count() == 3


def test_session_rollback_drops_the_row_and_its_jobs(app: Conveyor, engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="declined"), Session(engine) as session, session.begin():
        session.add(ShopOrder(id="o1"))
        app.enqueue("plain", {"order": "o1"}, connection=session)
        raise RuntimeError("payment declined")
    assert saved_orders(engine) == [] and app.admin.jobs.count() == 0


def test_connection_transaction_commit_and_rollback(app: Conveyor, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(ShopOrder.__table__.insert().values(id="o1"))
        app.enqueue("plain", {"order": "o1"}, connection=conn)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(ShopOrder.__table__.insert().values(id="o2"))
        app.enqueue("plain", {"order": "o2"}, connection=conn)
        raise RuntimeError("rolled back")
    assert saved_orders(engine) == ["o1"]
    assert [j.payload for j in app.admin.jobs.list()] == [{"order": "o1"}]


def test_an_invalid_payload_is_refused_before_the_session_writes(app: Conveyor, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.add(ShopOrder(id="o1"))
        with pytest.raises(Exception, match="quantity"):
            app.enqueue("process_order", {"order_id": "o1", "email": "e", "items": [{"product_id": "p", "quantity": 0}]}, connection=session)
    assert saved_orders(engine) == ["o1"] and app.admin.jobs.count() == 0


async def test_async_session_commit_and_rollback(app: Conveyor, engine: Engine, database_url: str) -> None:
    async_engine = create_async_engine(sqlalchemy_url(database_url, "async"))
    try:
        async with AsyncSession(async_engine) as session, session.begin():
            session.add(ShopOrder(id="o1"))
            await session.flush()
            job_id = await app.aenqueue("plain", {"order": "o1"}, connection=session)
            await app.aenqueue_many([("send_email", {"to": "a"})], connection=session)
        with pytest.raises(RuntimeError):
            async with AsyncSession(async_engine) as session, session.begin():
                session.add(ShopOrder(id="o2"))
                await app.aenqueue("plain", {"order": "o2"}, connection=session)
                raise RuntimeError("rolled back")
        async with async_engine.begin() as conn:  # an AsyncConnection joins too
            await app.aenqueue("plain", {"order": "o3"}, connection=conn)
            assert (await conn.execute(select(func.count()).select_from(ShopOrder))).scalar() == 1
    finally:
        await async_engine.dispose()
    assert saved_orders(engine) == ["o1"]
    assert app.admin.jobs.get(job_id).payload == {"order": "o1"}
    assert sorted(j.type for j in app.admin.jobs.list()) == ["plain", "plain", "send_email"]


async def test_an_async_session_passed_to_sync_enqueue_is_refused(app: Conveyor, engine: Engine, database_url: str) -> None:
    async_engine = create_async_engine(sqlalchemy_url(database_url, "async"))
    try:
        async with AsyncSession(async_engine) as session:
            with pytest.raises(OptionError, match="aenqueue"):
                app.enqueue("plain", {}, connection=session)
    finally:
        await async_engine.dispose()
