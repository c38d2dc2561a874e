"""The order pipeline run by a real worker: mail, PDF, stock exactly once, webhooks, reports, cleanup."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from conveyor.testing import running_worker, wait_until
from examples.shop import mailbox
from examples.shop.demo import DEMO_RECEIVER_PATH, WebhookReceiver, free_port, register_receiver
from examples.shop.jobs import Shop
from tests.shop.conftest import ORDER, STAFF

TOTAL = 2 * 8999 + 4999


def stock(client: httpx.Client) -> dict[str, int]:
    return {p["id"]: p["stock"] for p in client.get("/products").json()}


def place(client: httpx.Client, **changes: object) -> str:
    answer = client.post("/orders", json={**ORDER, **changes})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def fulfilled(client: httpx.Client, order_id: str) -> bool:
    return bool(client.get(f"/orders/{order_id}").json()["status"] == "fulfilled")


def test_every_first_attempt_failing_still_fulfils_the_order(
    make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]
) -> None:
    shop = make_shop(email_failure_rate=1.0, pdf_failure_rate=1.0)
    client = serve(shop)
    receiver = WebhookReceiver()
    receiver.secret = client.post("/webhooks", json={"url": receiver.url}, headers=STAFF).json()["secret"]
    try:
        order_id = place(client)
        with running_worker(shop.app):
            wait_until(lambda: len(receiver.accepted) == 1, timeout=20, message="the order.completed webhook")
        view = client.get(f"/orders/{order_id}").json()
        assert view["status"] == "fulfilled"
        jobs = {j["type"]: j for j in view["jobs"]}
        assert jobs["send_order_confirmation"]["attempt"] == 2 and "injected email failure" in jobs["send_order_confirmation"]["last_error"]
        assert jobs["generate_invoice"]["attempt"] == 2 and "injected pdf failure" in jobs["generate_invoice"]["last_error"]
        assert {j["state"] for t, j in jobs.items() if t != "send_followup_email"} == {"completed"}

        mail = mailbox.read(shop.config.mailbox)
        assert [(m["kind"], m["order_id"], m["rcpt_tos"]) for m in mail] == [("confirmation", order_id, ["ada@example.com"])]
        assert "Total: $229.97" in mail[0]["body"]
        pdf = client.get(view["invoice"])
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = PdfReader(shop.config.invoice_dir / f"{order_id}.pdf").pages[0].extract_text()
        assert "Mechanical Keyboard" in text and "Monitor Stand" in text and "Total: $229.97" in text
        assert stock(client) == {"prod-1": 48, "prod-2": 100, "prod-3": 24}
        event = receiver.accepted[0]
        assert event["type"] == "order.completed" and event["data"]["order_id"] == order_id and event["data"]["total_cents"] == TOTAL
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_inventory_is_taken_once_however_often_the_job_runs(shop: Shop, client: httpx.Client) -> None:
    order_id = place(client)
    extra = [shop.app.enqueue("sync_inventory", {"order_id": order_id}) for _ in range(3)]
    with running_worker(shop.app, concurrency=4):
        wait_until(lambda: fulfilled(client, order_id) and all(shop.app.admin.jobs.get(j).state == "completed" for j in extra), timeout=20)
    runs = shop.app.admin.jobs.list(type="sync_inventory")
    assert sorted(j.result["applied"] for j in runs) == [False, False, False, True]
    assert stock(client) == {"prod-1": 48, "prod-2": 100, "prod-3": 24}


KILLED_MID_WAY = """
import os, signal
from examples.shop import inventory
from examples.shop.config import ShopConfig
from examples.shop.jobs import create_shop
shop = create_shop(ShopConfig(database_url=os.environ["DATABASE_URL"]))
with shop.db.transaction() as tx:
    order = shop.db.order({order_id!r}, tx, lock=True)
    assert inventory.sync(shop.db, tx, order).applied
    print("decremented, not committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_inventory_killed_mid_transaction_leaves_stock_for_the_retry(shop: Shop, client: httpx.Client, database_url: str) -> None:
    order_id = place(client)
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_MID_WAY.format(order_id=order_id))],
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert killed.returncode == -9 and "decremented" in killed.stdout, killed.stderr
    assert stock(client) == {"prod-1": 50, "prod-2": 100, "prod-3": 25}  # nothing of the killed run stuck
    with running_worker(shop.app):
        wait_until(lambda: fulfilled(client, order_id), timeout=20)
    assert stock(client) == {"prod-1": 48, "prod-2": 100, "prod-3": 24}


def test_webhook_that_keeps_failing_ends_in_the_dead_letter_queue(
    make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    shop = make_shop(webhook_attempts=3)
    client = serve(shop)
    receiver = WebhookReceiver(fail_first=1_000)
    receiver.secret = client.post("/webhooks", json={"url": receiver.url}, headers=STAFF).json()["secret"]
    try:
        place(client)
        with caplog.at_level(logging.ERROR, logger="shop.jobs"), running_worker(shop.app):
            wait_until(lambda: shop.app.admin.jobs.count(type="deliver_webhook", state="dead") == 1, timeout=20)
            wait_until(lambda: "ALERT" in caplog.text, timeout=5)
        dead = shop.app.admin.dead_letters.list()[0]
        assert dead.attempt == 3 and receiver.calls == 3
        assert [e.error for e in dead.errors] == ["WebhookDeliveryError: webhook delivery to " + receiver.url + " failed: HTTP 500"] * 3
        assert "deliver_webhook is dead after 3 attempts" in caplog.text
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_followup_email_goes_out_after_its_delay(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]) -> None:
    shop = make_shop(followup_delay=0.5)
    client = serve(shop)
    order_id = place(client)
    with running_worker(shop.app):
        wait_until(lambda: any(m["kind"] == "followup" for m in mailbox.read(shop.config.mailbox)), timeout=20)
    followup = [m for m in mailbox.read(shop.config.mailbox) if m["kind"] == "followup"]
    assert [m["order_id"] for m in followup] == [order_id]
    assert followup[0]["received_at"] >= datetime.fromisoformat(client.get(f"/orders/{order_id}").json()["created_at"]).timestamp() + 0.5


def test_daily_sales_report_writes_csv_and_html(shop: Shop, client: httpx.Client) -> None:
    first = place(client)
    second = place(client, items=[{"product_id": "prod-2", "quantity": 3}])
    client.post("/orders", json={**ORDER, "payment_token": "tok_declined"})
    today = datetime.now(UTC).date().isoformat()
    job = shop.app.enqueue("daily_sales_report", {"day": today})
    with running_worker(shop.app):
        wait_until(lambda: shop.app.admin.jobs.get(job).state == "completed", timeout=20)
    result = shop.app.admin.jobs.get(job).result
    assert result["orders"] == 2 and result["revenue_cents"] == TOTAL + 3 * 3499
    with open(result["csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["order_id", "created_at", "user_id", "items", "total_cents", "total"]
    assert {r[0] for r in rows[1:-1]} == {first, second}
    assert rows[-1] == ["TOTAL", today, "", "6", str(TOTAL + 3 * 3499), "334.94"]
    page = Path(result["html"]).read_text()
    assert "<strong>2</strong> orders" in page and "$334.94" in page and "USB-C Hub" in page


def test_cleanup_purges_finished_jobs_and_keeps_scheduled_ones(shop: Shop, client: httpx.Client) -> None:
    order_id = place(client)
    with running_worker(shop.app):
        wait_until(lambda: fulfilled(client, order_id) and shop.app.admin.jobs.count(state="completed") == 3, timeout=20)
        job = shop.app.enqueue("cleanup_finished_jobs", {"older_than_seconds": 0.001})
        wait_until(lambda: shop.app.admin.jobs.get(job).state == "completed", timeout=20)
    assert shop.app.admin.jobs.get(job).result == {"purged": 3}
    assert [j.type for j in shop.app.admin.jobs.list() if j.id != job] == ["send_followup_email"]


def test_an_invoice_renders_any_unicode_name(make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]) -> None:
    """PDF's built-in fonts stop at Latin-1: "李" killed every attempt of the invoice and the order was never fulfilled."""
    shop = make_shop()
    client = serve(shop)
    names = {"李小龙": "李小龙", "Zoë Ωμέγα": "Ωμέγα", "Алёна": "Алёна"}
    orders = {place(client, user_id=name): expected for name, expected in names.items()}
    with running_worker(shop.app):
        wait_until(lambda: all(fulfilled(client, o) for o in orders), timeout=60, message="every order to be fulfilled")
    for order_id, expected in orders.items():
        text = PdfReader(shop.config.invoice_dir / f"{order_id}.pdf").pages[0].extract_text()
        assert expected in text and "Total: $229.97" in text
    assert shop.app.admin.jobs.count(type="generate_invoice", state="completed") == 3 and shop.app.admin.dead_letters.list() == []


def test_an_endpoint_that_keeps_failing_is_disabled_and_gets_no_new_deliveries(
    make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]
) -> None:
    shop = make_shop(webhook_attempts=8, webhook_disable_after=3)
    client = serve(shop)
    live = WebhookReceiver()
    live.secret = client.post("/webhooks", json={"url": live.url}, headers=STAFF).json()["secret"]
    gone = f"http://127.0.0.1:{free_port()}/hooks/orders"  # nobody listens there: a receiver that went away
    dead_id = client.post("/webhooks", json={"url": gone}, headers=STAFF).json()["id"]
    try:
        first = place(client)
        with running_worker(shop.app):
            wait_until(lambda: len(live.accepted) == 1, timeout=30, message="the live receiver's delivery")
            wait_until(lambda: shop.app.admin.jobs.count(type="deliver_webhook", state="cancelled") == 1, timeout=30,
                       message="the delivery to the dead port to stop")
        stopped = shop.app.admin.jobs.list(type="deliver_webhook", state="cancelled")[0]
        assert stopped.attempt == 3  # not webhook_attempts (8): the endpoint was disabled on its third failure in a row
        endpoint = next(e for e in client.get("/webhooks", headers=STAFF).json() if e["id"] == dead_id)
        assert endpoint["failures"] == 3 and endpoint["disabled_at"] is not None
        assert shop.app.admin.dead_letters.list() == []

        second = place(client)
        hooks = [j for j in client.get(f"/orders/{second}").json()["jobs"] if j["type"] == "deliver_webhook"]
        assert len(hooks) == 1  # for the live receiver only
        again = client.post("/webhooks", json={"url": gone}, headers=STAFF)  # registering it again enables it
        assert again.status_code == 200 and again.json()["id"] == dead_id and again.json()["disabled_at"] is None
        assert first != second
    finally:
        live.shutdown()
        live.server_close()


def test_a_demo_run_replaces_the_receivers_earlier_runs_left_registered(
    make_shop: Callable[..., Shop], serve: Callable[[Shop], httpx.Client]
) -> None:
    shop = make_shop()
    client = serve(shop)
    other = client.post("/webhooks", json={"url": "http://127.0.0.1:9/hooks/orders"}, headers=STAFF).json()["id"]  # not the demo's
    with httpx.Client(base_url=client.base_url, headers=STAFF) as staff:
        earlier = WebhookReceiver(path=DEMO_RECEIVER_PATH)
        register_receiver(staff, earlier)
        earlier.shutdown()
        earlier.server_close()  # a run killed before it could remove its receiver
        current = WebhookReceiver(path=DEMO_RECEIVER_PATH)
        try:
            mine = register_receiver(staff, current)
            assert register_receiver(staff, current) == mine  # registering again keeps the one endpoint
            urls = {e["id"]: e["url"] for e in staff.get("/webhooks").json()}
            assert urls == {other: "http://127.0.0.1:9/hooks/orders", mine: current.url}
            order_id = place(client)
            hooks = [j for j in client.get(f"/orders/{order_id}").json()["jobs"] if j["type"] == "deliver_webhook"]
            assert len(hooks) == 2  # the other endpoint and this run's receiver; none to the dead port
        finally:
            current.shutdown()
            current.server_close()
