"""Mailbox: the demo's SMTP server (aiosmtpd), appending every received message to a JSON-lines file.

Run it with ``python -m examples.shop.mailbox --port 8025 --file shop-data/mail.jsonl``; the
shop lists the file at ``GET /demo/mail`` and the end-to-end test reads it.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MailboxHandler:
    """aiosmtpd handler: one JSON line per message, flushed before the server answers 250."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = message_from_bytes(content, policy=default)
        assert isinstance(msg, EmailMessage)
        body = msg.get_body(("plain",))
        record = {
            "received_at": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["Subject"] or ""),
            "message_id": str(msg["Message-ID"] or ""),
            "order_id": str(msg["X-Shop-Order"] or ""),
            "kind": str(msg["X-Shop-Kind"] or ""),
            "body": body.get_content() if body is not None else "",
        }
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


def read(path: Path | None) -> list[dict[str, Any]]:
    """Every message received so far, oldest first."""
    if path is None or not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def serve(host: str, port: int, path: Path) -> None:
    """Receive mail until SIGTERM or SIGINT."""
    controller = Controller(MailboxHandler(path), hostname=host, port=port)
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"mailbox: SMTP on {host}:{port}, writing {path}", flush=True)
    stop.wait()
    controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args()
    serve(args.host, args.port, args.file)


if __name__ == "__main__":
    main()
