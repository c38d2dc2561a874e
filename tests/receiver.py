"""A real local HTTP server standing in for a webhook receiver: it answers with the statuses
queued in ``answers`` and records every request it got."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


def serve(server: ReceiverServer) -> Iterator[ReceiverServer]:
    server.received, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    yield from serve(ReceiverServer(("127.0.0.1", 0), Receiver))


TLS_NAME = "hooks.example.test"


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[ReceiverServer, Path]]:
    """An HTTPS receiver on 127.0.0.1 whose self-signed certificate names ``TLS_NAME`` only;
    yields it and the certificate (to trust it as its own authority)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={TLS_NAME}",
         "-addext", f"subjectAltName=DNS:{TLS_NAME}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ReceiverServer(("127.0.0.1", 0), Receiver)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for running in serve(server):
        yield running, cert


def url_of(server: ReceiverServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"
