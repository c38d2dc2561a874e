"""A real HTTP server (uvicorn in a thread) over a fresh database per test, on both backends."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from conveyor import Conveyor
from conveyor.testing import wait_until
from conveyor.web import create_app

WRITE = "write-token-123"
READ = "read-token-456"


@dataclass
class Server:
    app: Conveyor
    url: str

    def client(self, token: str | None = WRITE) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def declare(app: Conveyor) -> None:
    """Two job types: one that succeeds, one that fails when asked to."""

    @app.job(queue="email", max_attempts=1)
    def send_email(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job(queue="billing", max_attempts=1)
    def charge(p: dict) -> None:  # type: ignore[type-arg]
        if p.get("fail"):
            raise RuntimeError(f"card declined for order {p.get('order', '?')}")


@contextmanager
def serve(asgi: Any) -> Iterator[str]:
    """Run an ASGI app on a free local port for the duration of the block."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, message="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    app = Conveyor(database_url, admin_token=WRITE, admin_read_token=READ, poll_interval=0.05, finish_delay=0.002)
    declare(app)
    try:
        with serve(create_app(app, refresh_seconds=1.0)) as url:
            yield Server(app, url)
    finally:
        app.close()
