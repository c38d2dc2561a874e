"""A real local HTTP server standing in for a webhook receiver: it answers with the statuses
queued in ``answers`` and records every request it got."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver(BaseHTTPRequestHandler):
    """Answers with the status queued in ``server.answers`` and records each request."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        server: ReceiverServer = self.server  # type: ignore[assignment]
        server.received.append((dict(self.headers.items()), body))
        status, extra = server.answers.pop(0) if server.answers else (204, {})
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class ReceiverServer(ThreadingHTTPServer):
    received: list[tuple[dict[str, str], bytes]]
    answers: list[tuple[int, dict[str, str]]]


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    server = ReceiverServer(("127.0.0.1", 0), Receiver)
    server.received, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server: ReceiverServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"
