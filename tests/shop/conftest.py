"""Fixtures: a shop on the test's database, served by a real uvicorn, mailing a real SMTP server."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller

from conveyor.testing import wait_until
from examples.shop.api import create_api
from examples.shop.config import ShopConfig
from examples.shop.demo import free_port
from examples.shop.jobs import Shop, create_shop
from examples.shop.mailbox import MailboxHandler

STAFF_TOKEN = "shop-staff-token-123"
STAFF = {"authorization": f"Bearer {STAFF_TOKEN}"}  # the admin token: staff-only routes of the shop take it

ORDER = {"user_id": "u-1", "email": "ada@example.com", "items": [{"product_id": "prod-1", "quantity": 2},
         {"product_id": "prod-3", "quantity": 1}], "payment_token": "tok_visa"}


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real SMTP server (aiosmtpd) writing what it receives to a JSON-lines file."""
    path = tmp_path / "mail.jsonl"
    controller = Controller(MailboxHandler(path), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, path
    controller.stop()


@pytest.fixture
def make_shop(
    database_url: str, tmp_path: Path, smtp: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Shop]]:
    """Build a shop on this test's database; overrides change its ShopConfig. Its admin token is STAFF_TOKEN."""
    shops: list[Shop] = []
    if "CONVEYOR_ADMIN_TOKEN" not in os.environ:
        monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", STAFF_TOKEN)

    def build(**overrides: Any) -> Shop:
        settings: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": tmp_path / "data",
            "smtp_port": smtp[0],
            "mailbox": smtp[1],
            "email_failure_rate": 0.0,
            "pdf_failure_rate": 0.0,
            "payment_latency": 0.0,
            "retry_base": 0.05,
            "webhook_allow_private": True,
            **overrides,
        }
        shop = create_shop(ShopConfig(**settings))
        shop.db.migrate()
        shops.append(shop)
        return shop

    yield build
    for shop in shops:
        shop.app.close()


@pytest.fixture
def shop(make_shop: Callable[..., Shop]) -> Shop:
    return make_shop()


class Served:
    """A shop's API on a real port, with an httpx client pointed at it."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.server = uvicorn.Server(uvicorn.Config(create_api(shop=shop), host="127.0.0.1", port=free_port(), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="shop-api", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=15, message="uvicorn to start")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.config.port}", timeout=15)

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def serve() -> Iterator[Callable[[Shop], httpx.Client]]:
    """Serve a shop over HTTP for the test; returns the client."""
    served: list[Served] = []

    def start(shop: Shop) -> httpx.Client:
        served.append(Served(shop))
        return served[-1].client

    yield start
    for s in served:
        s.close()


@pytest.fixture
def client(shop: Shop, serve: Callable[[Shop], httpx.Client]) -> httpx.Client:
    return serve(shop)
