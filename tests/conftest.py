"""Fixtures: every contract test runs against a fresh SQLite file and a fresh PostgreSQL schema."""

from __future__ import annotations

import functools
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import psycopg
import pytest

from conveyor import Conveyor

pytest_plugins = ["tests.receiver", "tests.pgbouncer"]  # the webhook receiver and pgbouncer fixtures, shared by several folders

PG_URL = os.environ.get("CONVEYOR_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


IN_CI = bool(os.environ.get("CI"))


def missing(what: str, how: str) -> NoReturn:
    """A service or program the suite needs is not here: skip on a developer's machine, fail in CI.

    CI installs and starts everything (.ci/run, `make test`), so there a missing piece is a broken
    set-up that must not pass as green; locally the rest of the suite still runs.
    """
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"{what} is missing ({how}); skipped locally, a failure in CI")


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL at CONVEYOR_TEST_PG cannot be used, once per test process; None when it can."""
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is not None:
        missing(f"PostgreSQL at {PG_URL}", f"{problem}; start it or point CONVEYOR_TEST_PG at one")


def pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema made for this test alone."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The contract fixture: the same test, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def app(database_url: str) -> Iterator[Conveyor]:
    application = Conveyor(database_url, poll_interval=0.05, finish_delay=0.002)
    yield application
    application.close()


def child_pids() -> set[int]:
    """This process's live children (Linux /proc)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """A test that fails half-way must not leave worker processes running into the next tests."""
    before = child_pids()
    yield
    for pid in child_pids() - before:
        try:
            os.kill(pid, signal.SIGKILL)  # a supervisor's children follow it (PR_SET_PDEATHSIG)
        except ProcessLookupError:
            pass
