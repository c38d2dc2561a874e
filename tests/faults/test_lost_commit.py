"""The shop when its database connection breaks with the order's COMMIT in flight (through bench/outage_proxy.py).

A proxy between the shop and PostgreSQL forwards the order's COMMIT and cuts the connection before
the answer comes back: the database has the order, the shop does not know. It used to answer 503
"nothing was saved", refund the charge, and let the client's retry place a second order. Now it
asks the database before it answers: acknowledged means stored, "not saved" means not saved, and
the same Idempotency-Key never makes a second order. PostgreSQL only: SQLite has no connection to lose.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.outage_proxy import OutageProxy
from conveyor.testing import wait_until
from examples.shop.config import ShopConfig
from examples.shop.jobs import Shop, create_shop
from tests.shop.conftest import ORDER, Served

TRIGGER = b"INSERT INTO shop_orders"


@pytest.fixture
def proxied(pg_url: str, tmp_path: Path) -> Iterator[tuple[OutageProxy, Shop, Served]]:
    """A shop whose every database connection goes through an OutageProxy; its API on a real port."""
    proxy = OutageProxy(("127.0.0.1", 5432)).start()
    shop = create_shop(ShopConfig(database_url=proxy.url(pg_url), data_dir=tmp_path / "data", payment_latency=0.0,
                                  email_failure_rate=0.0, pdf_failure_rate=0.0))
    shop.db.migrate()
    served = Served(shop)
    try:
        yield proxy, shop, served
    finally:
        served.close()
        shop.app.close()
        proxy.stop()


def stored_orders(shop: Shop) -> list[str]:
    with shop.db.transaction() as tx:
        return [r[0] for r in tx.all("SELECT id FROM shop_orders ORDER BY id")]


def test_a_committed_order_whose_acknowledgement_is_lost_is_answered_as_placed(proxied: tuple[OutageProxy, Shop, Served]) -> None:
    proxy, shop, served = proxied
    key = {"idempotency-key": "order-lost-ack-1"}
    proxy.cut_at_commit(TRIGGER, forward=True)
    answer = served.client.post("/orders", json=ORDER, headers=key)
    assert proxy.commits_cut == 1
    assert answer.status_code == 201, answer.text  # acknowledged: and it is stored
    order_id = answer.json()["id"]
    assert stored_orders(shop) == [order_id]
    gateway = served.server.config.app.state.checkout.gateway
    assert gateway.refunded == set()  # the customer paid for an order that exists
    assert shop.app.admin.jobs.count(workflow_id=order_id) == 4

    retry = served.client.post("/orders", json=ORDER, headers=key)  # a client that retries anyway
    assert retry.status_code == 201 and retry.json()["id"] == order_id and retry.headers["idempotent-replayed"] == "true"
    assert stored_orders(shop) == [order_id] and shop.app.admin.jobs.count() == 4


def test_a_commit_that_never_reached_the_database_is_answered_not_saved_and_refunded(
    proxied: tuple[OutageProxy, Shop, Served],
) -> None:
    proxy, shop, served = proxied
    key = {"idempotency-key": "order-lost-commit-1"}
    proxy.cut_at_commit(TRIGGER, forward=False)
    answer = served.client.post("/orders", json=ORDER, headers=key)
    assert proxy.commits_cut == 1
    assert answer.status_code == 503 and "nothing was saved" in answer.json()["detail"]
    assert answer.headers["retry-after"]
    assert stored_orders(shop) == [] and shop.app.admin.jobs.count() == 0  # "not saved" means not saved
    gateway = served.server.config.app.state.checkout.gateway
    wait_until(lambda: len(gateway.refunded) == 1, message="the charge to be refunded")

    retry = served.client.post("/orders", json=ORDER, headers=key)  # as told: try again, same key
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert stored_orders(shop) == [retry.json()["id"]] and shop.app.admin.jobs.count() == 4


def test_every_answer_tells_the_truth_across_lost_commits(proxied: tuple[OutageProxy, Shop, Served]) -> None:
    """Orders with and without lost COMMITs, each retried with its key until acknowledged: one order each, no more."""
    proxy, shop, served = proxied
    placed: dict[str, str] = {}
    for n in range(6):
        key = {"idempotency-key": f"order-mixed-{n}"}
        if n % 3 != 2:
            proxy.cut_at_commit(TRIGGER, forward=n % 3 == 0)
        for _attempt in range(5):
            answer = served.client.post("/orders", json={**ORDER, "user_id": f"u-{n}"}, headers=key)
            if answer.status_code == 201:
                placed[key["idempotency-key"]] = answer.json()["id"]
                break
            assert answer.status_code == 503, answer.text
    assert len(placed) == 6
    assert sorted(stored_orders(shop)) == sorted(placed.values())
    gateway = served.server.config.app.state.checkout.gateway
    wait_until(lambda: len(gateway.refunded) == 2, message="the two charges whose orders were not saved to be refunded")
    with httpx.Client(base_url=served.client.base_url) as client:
        for order_id in placed.values():
            assert client.get(f"/orders/{order_id}").json()["status"] == "paid"
