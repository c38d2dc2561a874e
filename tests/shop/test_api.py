"""The shop's HTTP API over a real server: shapes, refusals, and the order's jobs committed with it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from conveyor import Priority
from examples.shop.jobs import Shop
from tests.shop.conftest import ORDER, STAFF


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
    assert client.get("/orders", headers=STAFF).json() == [] and shop.app.admin.jobs.count() == 0


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
    created = client.post("/webhooks", json={"url": "https://93.184.216.34/hooks"}, headers=STAFF)
    assert created.status_code == 201
    assert created.json()["id"].startswith("we_") and created.json()["secret"].startswith("whsec_")
    assert [w["url"] for w in client.get("/webhooks", headers=STAFF).json()] == ["https://93.184.216.34/hooks"]
    assert "secret" not in client.get("/webhooks", headers=STAFF).json()[0]
    for url in ("http://127.0.0.1:9/x", "http://10.0.0.1/x", "ftp://93.184.216.34/"):
        refused = client.post("/webhooks", json={"url": url}, headers=STAFF)
        assert refused.status_code == 422, url
        assert refused.json()["errors"][0]["field"] == "url"
    assert client.post("/webhooks", json={}, headers=STAFF).status_code == 422


def test_demo_mail_needs_the_demo_mailbox(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]) -> None:
    client = serve(make_shop(mailbox=None))
    assert client.get("/demo/mail").status_code == 404


def test_admin_dashboard_is_mounted_behind_its_token(
    make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", "demo-token-123456")
    client = serve(make_shop())  # the token set here wins over the fixture's
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


def test_orders_list_and_webhook_endpoints_are_staff_only(client: httpx.Client, shop: Shop) -> None:
    """Anyone may order; only staff (the admin tokens) see every order or choose where orders are sent."""
    assert client.post("/orders", json=ORDER).status_code == 201
    for method, path in (("GET", "/orders"), ("GET", "/webhooks"), ("POST", "/webhooks"), ("DELETE", "/webhooks/we_x")):
        anonymous = client.request(method, path, json={"url": "https://93.184.216.34/hooks"} if method == "POST" else None)
        assert anonymous.status_code == 401, (method, path)
        wrong = client.request(method, path, headers={"authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401, (method, path)
    assert shop.db.endpoints() == []
    listed = client.get("/orders", headers=STAFF)
    assert listed.status_code == 200 and [o["email"] for o in listed.json()] == ["ada@example.com"]


def test_read_only_staff_may_look_but_not_register(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_ADMIN_READ_TOKEN", "shop-read-token-456")
    client = serve(make_shop())
    reader = {"authorization": "Bearer shop-read-token-456"}
    assert client.get("/orders", headers=reader).status_code == 200
    assert client.post("/webhooks", json={"url": "https://93.184.216.34/hooks"}, headers=reader).status_code == 403


def test_webhook_endpoints_are_bounded_one_per_url_and_removable(make_shop: Callable[..., Shop],
                                                                 serve: Callable[[Shop], httpx.Client]) -> None:
    client = serve(make_shop(webhook_allow_private=False, webhook_max_endpoints=3))
    made = [client.post("/webhooks", json={"url": f"https://93.184.216.34/hooks/{n}"}, headers=STAFF) for n in range(3)]
    assert [m.status_code for m in made] == [201, 201, 201]
    again = client.post("/webhooks", json={"url": "https://93.184.216.34/hooks/1"}, headers=STAFF)
    assert again.status_code == 200 and again.json()["id"] == made[1].json()["id"]  # the same endpoint, not a second one
    over = client.post("/webhooks", json={"url": "https://93.184.216.34/hooks/9"}, headers=STAFF)
    assert over.status_code == 409 and over.json()["limit"] == 3
    assert client.delete(f"/webhooks/{made[0].json()['id']}", headers=STAFF).status_code == 204
    assert client.delete(f"/webhooks/{made[0].json()['id']}", headers=STAFF).status_code == 404
    assert client.post("/webhooks", json={"url": "https://93.184.216.34/hooks/9"}, headers=STAFF).status_code == 201
    assert len(client.get("/webhooks", headers=STAFF).json()) == 3


def test_an_idempotency_key_makes_one_order_however_often_it_is_sent(client: httpx.Client, shop: Shop) -> None:
    key = {"idempotency-key": "checkout-7f3a"}
    first = client.post("/orders", json=ORDER, headers=key)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = client.post("/orders", json=ORDER, headers=key)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(client.get("/orders", headers=STAFF).json()) == 1 and shop.app.admin.jobs.count() == 4
    other = client.post("/orders", json=order(user_id="u-2"), headers=key)  # the same key for another order
    assert other.status_code == 422 and "different request" in other.json()["error"]
    declined = client.post("/orders", json=order(payment_token="tok_declined"), headers={"idempotency-key": "checkout-declined"})
    replayed = client.post("/orders", json=order(payment_token="tok_declined"), headers={"idempotency-key": "checkout-declined"})
    assert declined.status_code == replayed.status_code == 402 and declined.json()["order_id"] == replayed.json()["order_id"]
    for bad in ("", "with space", "x" * 256, "caf\u00e9"):
        assert client.post("/orders", json=ORDER, headers={"idempotency-key": bad.encode()}).status_code == 422
    assert client.post("/orders", json=ORDER).status_code == 201  # without a key, every request is a new order
    assert len(client.get("/orders", headers=STAFF).json()) == 3


def test_input_that_can_never_be_stored_is_422_and_charges_nothing(client: httpx.Client, shop: Shop) -> None:
    """A NUL cannot be stored by PostgreSQL: it used to charge, refund and answer a retryable 503."""
    for field, value in (("user_id", "u\x001"), ("email", "a\x00b@example.com"), ("payment_token", "tok_\x00visa")):
        answer = client.post("/orders", json=order(**{field: value}))
        assert answer.status_code == 422, answer.text
        assert "retry-after" not in answer.headers
        assert answer.json()["errors"][0]["field"] == field and "U+0000" in answer.json()["errors"][0]["message"]
    item = client.post("/orders", json=order(items=[{"product_id": "prod-1\x00", "quantity": 1}]))
    assert item.status_code == 422 and item.json()["errors"][0]["field"] == "items.0.product_id"
    surrogate = client.post("/orders", content=b'{"user_id": "u\\ud800", "email": "a@example.com", "payment_token": "tok_visa", '
                                                b'"items": [{"product_id": "prod-1", "quantity": 1}]}',
                            headers={"content-type": "application/json"})
    assert surrogate.status_code == 422
    assert client.get("/orders/ord%00x").status_code == 404
    assert client.get("/orders", headers=STAFF).json() == [] and shop.app.admin.jobs.count() == 0


def test_nothing_the_shop_serves_needs_the_internet(client: httpx.Client) -> None:
    """FastAPI's /docs page loads Swagger UI from a CDN: it is off; the OpenAPI document stays."""
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "Conveyor Shop"
    login = client.get("/admin/login")
    assert login.status_code == 200
    assert "http://" not in login.text and "https://" not in login.text
