"""The PgBouncer fixture: Debian's pgbouncer in transaction pooling mode, started like PostgreSQL.

Each test that uses ``pgbouncer_urls`` gets a database of its own (a pooler passes no
``options`` startup parameter, so the per-test schema of the other tests cannot be used),
reached through the pooler, plus the direct URL of the same database for LISTEN.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

PGBOUNCER = "/usr/sbin/pgbouncer"
PG_URL = os.environ.get("CONVEYOR_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
SERVER_POOL = 4  # server connections per database: fewer than the clients the tests open


class BouncerUrls(NamedTuple):
    pooled: str  # through pgbouncer, transaction mode
    direct: str  # the same database, straight to PostgreSQL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(url: str, db: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc if port is None else f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, "/" + db, "", ""))


@pytest.fixture(scope="session")
def pgbouncer_port() -> Iterator[int]:
    """A pgbouncer of this test session's own, on a free port, with a config written here."""
    if not os.access(PGBOUNCER, os.X_OK):
        raise RuntimeError(f"{PGBOUNCER} is missing: `make test` installs it (apt-get install pgbouncer)")
    # pgbouncer refuses to run as root and drops to the postgres user, which must reach this folder
    # (pytest's own temporary folders are private to root).
    folder = Path(tempfile.mkdtemp(prefix="conveyor-pgbouncer-"))
    folder.chmod(0o777)
    server = urlsplit(PG_URL)
    port = free_port()
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={server.hostname or '127.0.0.1'} port={server.port or 5432} user={server.username or 'root'}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {SERVER_POOL}
max_client_conn = 500
server_reset_query =
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""
    )
    ini.chmod(0o644)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([PGBOUNCER, *user, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg.connect(with_db(PG_URL, "test", port), connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                raise RuntimeError(f"pgbouncer did not start (exit {proc.poll()}): {log[-2000:]}") from None
            time.sleep(0.1)
    yield port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pgbouncer_urls(pgbouncer_port: int) -> Iterator[BouncerUrls]:
    """A fresh database, through the pooler and direct."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    try:
        yield BouncerUrls(with_db(PG_URL, db, pgbouncer_port), with_db(PG_URL, db))
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {db} WITH (FORCE)")
