"""The shop's HTTP API over a real server: shapes, refusals, and the order's jobs committed with it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from conveyor import Priority
from examples.shop.jobs import Shop
from tests.shop.conftest import ORDER


def order(**changes: Any) -> dict[str, Any]:
    return {**ORDER, **changes}


def test_products_are_seeded_once_with_prices_in_cents(client: httpx.Client, shop: Shop) -> None:
    shop.db.migrate()  # a second start does not seed again
    products = client.get("/products").json()
    assert [(p["id"], p["name"], p["price_cents"], p["price"], p["stock"]) for p in products] == [
        ("prod-1", "Mechanical Keyboard", 8999, "89.99", 50),
        ("prod-2", "USB-C Hub", 3499, "34.99", 100),
        ("prod-3", "Monitor Stand", 4999, "49.99", 25),
    ]


def test_health_reports_the_queue(client: httpx.Client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["queue"]["pending"] == 0 and "dead" in body["queue"]


def test_invalid_body_lists_every_bad_field(client: httpx.Client, shop: Shop) -> None:
    answer = client.post("/orders", json={"user_id": "", "email": "nope", "items": [{"product_id": "prod-1", "quantity": 0}, {}],
                                          "surprise": 1})
    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"user_id", "email", "items.0.quantity", "items.1.product_id", "items.1.quantity", "payment_token", "surprise"}
    assert client.post("/orders", json=order(items=[])).status_code == 422
    assert shop.app.admin.jobs.count() == 0


def test_unknown_product_and_short_stock_are_conflicts(client: httpx.Client, shop: Shop) -> None:
    unknown = client.post("/orders", json=order(items=[{"product_id": "prod-404", "quantity": 1}]))
    assert unknown.status_code == 409 and unknown.json()["product_ids"] == ["prod-404"]
    short = client.post("/orders", json=order(items=[{"product_id": "prod-3", "quantity": 20}, {"product_id": "prod-3", "quantity": 6}]))
    assert short.status_code == 409
    assert short.json()["items"] == [{"product_id": "prod-3", "requested": 26, "available": 25}]
    assert client.post("/orders", json=order(items=[{"product_id": "prod-3", "quantity": 20}])).status_code == 201
    again = client.post("/orders", json=order(items=[{"product_id": "prod-3", "quantity": 6}]))
    assert again.status_code == 409 and again.json()["items"][0]["available"] == 5  # reserved by the paid order
    assert shop.app.admin.jobs.count() == 4


def test_declined_card_is_402_and_leaves_no_jobs(client: httpx.Client, shop: Shop) -> None:
    answer = client.post("/orders", json=order(payment_token="tok_declined"))
    assert answer.status_code == 402 and answer.json()["error"] == "card declined"
    view = client.get(f"/orders/{answer.json()['order_id']}").json()
    assert view["status"] == "declined" and view["jobs"] == [] and view["workflow_id"] is None
    assert client.post("/orders", json=order(payment_token="tok_stolen")).status_code == 402
    assert shop.app.admin.jobs.count() == 0


def test_gateway_outage_is_503_and_stores_nothing(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]) -> None:
    shop = make_shop(payment_failure_rate=1.0)
    client = serve(shop)
    answer = client.post("/orders", json=ORDER)
    assert answer.status_code == 503
    assert client.get("/orders").json() == [] and shop.app.admin.jobs.count() == 0


def test_order_and_its_jobs_commit_together(client: httpx.Client, shop: Shop) -> None:
    answer = client.post("/orders", json=ORDER)
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "paid" and body["total_cents"] == 2 * 8999 + 4999 and body["total"] == "229.97"
    assert [(i["product_id"], i["quantity"], i["total_cents"]) for i in body["items"]] == [("prod-1", 2, 17998), ("prod-3", 1, 4999)]
    assert body["workflow_id"] == body["id"]

    view = client.get(f"/orders/{body['id']}").json()
    jobs = {j["type"]: j for j in view["jobs"]}
    assert {t: j["state"] for t, j in jobs.items()} == {
        "send_order_confirmation": "pending",
        "generate_invoice": "waiting",  # depends on the confirmation
        "sync_inventory": "waiting",
        "send_followup_email": "scheduled",
    }
    confirmation = shop.app.admin.jobs.get(jobs["send_order_confirmation"]["id"])
    followup = shop.app.admin.jobs.get(jobs["send_followup_email"]["id"])
    assert confirmation.priority == Priority.HIGH and confirmation.queue == "email"
    assert abs((followup.run_at - followup.created_at) - timedelta(hours=24)) < timedelta(seconds=5)
    assert client.get("/orders/ord_missing").status_code == 404


def test_webhook_endpoints_get_a_signing_secret(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]) -> None:
    client = serve(make_shop(webhook_allow_private=False))
    created = client.post("/webhooks", json={"url": "https://93.184.216.34/hooks"})
    assert created.status_code == 201
    assert created.json()["id"].startswith("we_") and created.json()["secret"].startswith("whsec_")
    assert [w["url"] for w in client.get("/webhooks").json()] == ["https://93.184.216.34/hooks"]
    assert "secret" not in client.get("/webhooks").json()[0]
    for url in ("http://127.0.0.1:9/x", "http://10.0.0.1/x", "ftp://93.184.216.34/"):
        refused = client.post("/webhooks", json={"url": url})
        assert refused.status_code == 422, url
        assert refused.json()["errors"][0]["field"] == "url"
    assert client.post("/webhooks", json={}).status_code == 422


def test_demo_mail_needs_the_demo_mailbox(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]) -> None:
    client = serve(make_shop(mailbox=None))
    assert client.get("/demo/mail").status_code == 404


def test_admin_dashboard_is_mounted_behind_its_token(
    make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", "demo-token-123456")
    client = serve(make_shop())
    order_id = client.post("/orders", json=ORDER).json()["id"]
    assert client.get("/admin/api/jobs").status_code == 401
    jobs = client.get("/admin/api/jobs", params={"workflow_id": order_id}, headers={"authorization": "Bearer demo-token-123456"})
    assert jobs.status_code == 200, jobs.text
    assert {j["type"] for j in jobs.json()["jobs"]} == {"send_order_confirmation", "generate_invoice", "sync_inventory", "send_followup_email"}
    page = client.get("/admin/", follow_redirects=False)
    assert page.status_code == 303 and "/admin/login" in page.headers["location"]


def test_report_and_cleanup_are_scheduled(shop: Shop) -> None:
    shop.app.cron_sync()
    schedules = {s.name: s for s in shop.app.admin.schedules.list()}
    assert {n: (schedules[n].expression, schedules[n].job_type) for n in schedules} == {
        "daily-sales-report": ("0 0 * * *", "daily_sales_report"),
        "cleanup-finished-jobs": ("0 3 * * *", "cleanup_finished_jobs"),
    }
