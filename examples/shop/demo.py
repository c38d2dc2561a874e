"""The demo: the whole shop as real processes (SMTP server, web app, two workers), stopped by Ctrl-C.

``make demo`` runs ``python -m examples.shop.demo``. It migrates, starts everything, prints the
URLs and the admin token, places ``DEMO_ORDERS`` orders through the HTTP API if asked, and on
SIGINT or SIGTERM stops every process gracefully (workers finish or hand back their jobs).
The end-to-end test starts the same Stack.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from conveyor.webhooks import ReplayGuard, WebhookVerificationError, verify
from examples.shop.config import ShopConfig
from examples.shop.db import ShopDB
from examples.shop.jobs import create_shop

ROOT = Path(__file__).resolve().parents[2]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    """The shop's processes: mailbox (SMTP), web server, workers; each in its own session."""

    env: dict[str, str]
    port: int
    workers: int = 2
    log_dir: Path | None = None  # each process's output goes to <name>.log here; None: inherit
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        config = ShopConfig.from_env(self.env)
        ShopDB(create_shop(config).app).migrate()  # once, before any process races to do it
        python = sys.executable
        self._spawn("mailbox", [python, "-m", "examples.shop.mailbox", "--port", str(config.smtp_port), "--file", str(config.mailbox)])
        self._spawn("web", [python, "-m", "uvicorn", "examples.shop.api:create_api", "--factory", "--host", "127.0.0.1",
                            "--port", str(self.port), "--log-level", "warning"],
                    {"CONVEYOR_DB_TIMEOUT": "3"})  # a shopper gets a 503 in seconds when the database is down
        self._spawn("workers", [python, "-m", "conveyor", "worker", "examples.shop.jobs:app", "--processes", str(self.workers)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200 and not port_free(config.smtp_port):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the shop did not answer at {self.url}/health within {timeout:.0f} s")

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        out: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **self.env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops them in order
        )
        if out is not None:
            out.close()  # the child has its own descriptor

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}" + (f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""))

    def stop(self, grace: float = 40.0) -> dict[str, int | None]:
        """SIGTERM to each (web first, so no new orders), wait, then SIGKILL what is left."""
        for name in ("web", "workers", "mailbox"):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int | None] = {}
        for name, proc in self.processes.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        return codes


class WebhookReceiver(ThreadingHTTPServer):
    """A local endpoint that verifies every delivery; ``fail_first`` calls are answered 500."""

    def __init__(self, fail_first: int = 0, on_event: Any = None, path: str = "/hooks/orders") -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.path = path
        self.secret = ""
        self.fail_first = fail_first
        self.on_event = on_event
        self.calls = 0
        self.accepted: list[dict[str, Any]] = []  # verified events, in arrival order
        self.invalid: list[str] = []
        self.guard = ReplayGuard()
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, name="webhook-receiver", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.path}"

    def receive(self, headers: Mapping[str, str], body: bytes) -> int:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                return 500
            try:
                verify(self.secret, headers, body, guard=self.guard)
            except WebhookVerificationError as exc:
                self.invalid.append(str(exc))
                return 400
            event = {"webhook_id": headers["webhook-id"], **json.loads(body)}
            self.accepted.append(event)
            self.guard.remember(headers["webhook-id"], int(headers["webhook-timestamp"]))
        if self.on_event is not None:
            self.on_event(event)
        return 204


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        server: WebhookReceiver = self.server  # type: ignore[assignment]
        status = server.receive({k.lower(): v for k, v in self.headers.items()}, body)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def random_order(rng: random.Random, n: int, declined: bool = False) -> dict[str, Any]:
    products = rng.sample(["prod-1", "prod-2", "prod-3"], rng.randint(1, 3))
    return {
        "user_id": f"user-{n % 7 + 1}",
        "email": f"customer{n % 7 + 1}@example.com",
        "items": [{"product_id": p, "quantity": rng.randint(1, 2)} for p in products],
        "payment_token": "tok_declined" if declined else "tok_visa",
    }


DEMO_RECEIVER_PATH = "/hooks/demo-receiver"  # marks the demo's own receivers among the shop's endpoints


def register_receiver(client: httpx.Client, receiver: WebhookReceiver) -> str:
    """Register this run's receiver, first removing the receivers earlier demo runs left behind; its endpoint id.

    Each run listens on a new port, so an earlier run's endpoint (a run killed before it could
    remove it) points at a port nobody listens on, and every new order would make deliveries
    there that retry for minutes. ``client`` carries the admin token (endpoints are staff-only).
    """
    for endpoint in client.get("/webhooks").raise_for_status().json():
        parts = urlsplit(endpoint["url"])
        if parts.hostname == "127.0.0.1" and parts.path == DEMO_RECEIVER_PATH and endpoint["url"] != receiver.url:
            client.delete(f"/webhooks/{endpoint['id']}")
    hook = client.post("/webhooks", json={"url": receiver.url}).raise_for_status().json()
    receiver.secret = hook["secret"]
    return str(hook["id"])


def demo_env(environ: Mapping[str, str]) -> dict[str, str]:
    data = Path(environ.get("SHOP_DATA_DIR", str(ROOT / "examples/shop/data"))).resolve()
    env = {
        "SHOP_DATA_DIR": str(data),
        "SHOP_MAILBOX": environ.get("SHOP_MAILBOX", str(data / "mail.jsonl")),
        "SHOP_SMTP_PORT": environ.get("SHOP_SMTP_PORT", "8025"),
        "SHOP_WEBHOOK_ALLOW_PRIVATE": environ.get("SHOP_WEBHOOK_ALLOW_PRIVATE", "1"),
        "CONVEYOR_ADMIN_TOKEN": environ.get("CONVEYOR_ADMIN_TOKEN") or secrets.token_urlsafe(18),
        "CONVEYOR_POLL_INTERVAL": environ.get("CONVEYOR_POLL_INTERVAL", "0.2"),
    }
    if environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = environ["DATABASE_URL"]
    return env


def main() -> int:
    env = demo_env(os.environ)
    port = int(os.environ.get("PORT", "8000"))
    for what, number in (("PORT", port), ("SHOP_SMTP_PORT", int(env["SHOP_SMTP_PORT"]))):
        if not port_free(number):
            print(f"demo: port {number} is in use; set {what} to another port", file=sys.stderr)
            return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(env, port)
    receiver = WebhookReceiver(on_event=lambda e: print(f"  webhook {e['type']} for {e['data']['order_id']}: signature verified", flush=True),
                               path=DEMO_RECEIVER_PATH)
    staff = httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {env['CONVEYOR_ADMIN_TOKEN']}"}, timeout=10)
    endpoint: str | None = None
    try:
        stack.start()
        endpoint = register_receiver(staff, receiver)
        announce(stack, env, receiver)
        orders = int(os.environ.get("DEMO_ORDERS", "0") or 0)
        if orders:
            place_orders(stack.url, orders)
        while not stop.wait(1.0):
            stack.check_alive()
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\ndemo: stopping (workers finish their running jobs first)...", flush=True)
        if endpoint is not None:
            try:
                staff.delete(f"/webhooks/{endpoint}")  # no deliveries to this run's receiver once it is gone
            except httpx.HTTPError:
                pass  # the next run removes it
        staff.close()
        codes = stack.stop()
        receiver.shutdown()
        print("demo: stopped " + ", ".join(f"{name} ({exit_text(code)})" for name, code in codes.items()), flush=True)
    return 0


def exit_text(code: int | None) -> str:
    """uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop too."""
    if code is not None and code < 0:
        return f"stopped by {signal.Signals(-code).name}"
    return f"exit {code}"


def announce(stack: Stack, env: Mapping[str, str], receiver: WebhookReceiver) -> None:
    data = Path(env["SHOP_DATA_DIR"])
    config = ShopConfig.from_env(env)
    admin = httpx.get(f"{stack.url}/admin/", follow_redirects=False, timeout=5).status_code != 404
    lines = [
        "",
        "Conveyor demo shop is running (Ctrl-C stops everything)",
        f"  shop API        {stack.url}/openapi.json   (GET /products, POST /orders, GET /orders/{{id}})",
        f"  received mail   {stack.url}/demo/mail",
        f"  admin dashboard {stack.url}/admin/   token: {env['CONVEYOR_ADMIN_TOKEN']}" if admin
        else "  admin dashboard not available in this version of Conveyor",
        f"  SMTP server     127.0.0.1:{env['SHOP_SMTP_PORT']}",
        f"  webhook         order.completed -> {receiver.url} (verified here)",
        f"  database        {config.database_url}",
        f"  invoices        {data / 'invoices'}",
        f"  reports         {data / 'reports'}",
        "",
        "Place an order:",
        f"  curl -s -X POST {stack.url}/orders -H 'content-type: application/json' \\",
        ("    -d '{\"user_id\": \"u1\", \"email\": \"u1@example.com\", \"items\": [{\"product_id\": \"prod-1\", \"quantity\": 1}], "
        "\"payment_token\": \"tok_visa\"}'"),
        "",
    ]
    print("\n".join(lines), flush=True)


def place_orders(url: str, count: int) -> None:
    rng = random.Random()
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(count):
            answer = client.post("/orders", json=random_order(rng, n, declined=count >= 5 and n == count - 1))
            body = answer.json()
            if answer.status_code == 201:
                print(f"  order {body['id']} placed: {len(body['items'])} lines, total ${body['total']}", flush=True)
            else:
                print(f"  order refused ({answer.status_code}): {body.get('error', body)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
