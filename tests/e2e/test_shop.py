"""The shop end to end, as real processes: web server, two workers, SMTP server, a webhook receiver.

50 orders go in over HTTP (45 paid, 5 declined); the checks read what the outside world
received: mail at the SMTP server, PDF files on disk, stock through the API, verified webhooks.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from conveyor import Conveyor
from conveyor.testing import wait_until
from examples.shop import mailbox
from examples.shop.demo import Stack, WebhookReceiver, free_port
from examples.shop.money import dollars

PRICES = {"prod-1": 8999, "prod-2": 3499, "prod-3": 4999}
STOCK = {"prod-1": 50, "prod-2": 100, "prod-3": 25}
ORDERS = 50
JOBS_PER_ORDER = 5  # confirmation, follow-up, invoice, inventory, one webhook delivery

pytestmark = pytest.mark.slow


def order_body(n: int) -> dict[str, Any]:
    items = [{"product_id": "prod-1", "quantity": 1}, {"product_id": "prod-2", "quantity": n % 2 + 1}]
    if n % 3 == 0:
        items.append({"product_id": "prod-3", "quantity": 1})
    return {"user_id": f"user-{n % 9}", "email": f"customer{n}@example.com", "items": items,
            "payment_token": "tok_declined" if n % 10 == 9 else "tok_visa"}


STAFF_TOKEN = "e2e-staff-token-1234"


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Any:
    data = tmp_path / "data"
    env = {
        "DATABASE_URL": database_url,
        "SHOP_DATA_DIR": str(data),
        "SHOP_MAILBOX": str(data / "mail.jsonl"),
        "SHOP_SMTP_PORT": str(free_port()),
        "SHOP_WEBHOOK_ALLOW_PRIVATE": "1",
        "SHOP_RETRY_BASE": "0.2",
        "SHOP_PAYMENT_LATENCY": "0.02",
        "CONVEYOR_POLL_INTERVAL": "0.1",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "CONVEYOR_ADMIN_TOKEN": STAFF_TOKEN,
    }
    shop = Stack(env, free_port(), workers=2, log_dir=tmp_path / "logs")
    try:
        shop.start()
        yield shop
    finally:
        codes = shop.stop()
        for name in ("workers", "mailbox"):
            assert codes.get(name) == 0, f"{name} exited with {codes.get(name)}: {read_log(tmp_path / 'logs' / (name + '.log'))}"


def read_log(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def test_fifty_orders_through_the_whole_pipeline(stack: Stack, database_url: str) -> None:
    receiver = WebhookReceiver(fail_first=2)
    client = httpx.Client(base_url=stack.url, timeout=30)
    try:
        hook = client.post("/webhooks", json={"url": receiver.url}, headers={"authorization": f"Bearer {STAFF_TOKEN}"})
        assert hook.status_code == 201, hook.text
        receiver.secret = hook.json()["secret"]

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda n: (n, client.post("/orders", json=order_body(n))), range(ORDERS)))
        paid = {a.json()["id"]: order_body(n) for n, a in answers if a.status_code == 201}
        declined = [a.json()["order_id"] for n, a in answers if a.status_code == 402]
        assert len(paid) == 45 and len(declined) == 5, [(a.status_code, a.text) for _, a in answers if a.status_code not in (201, 402)]

        expected_total = {oid: sum(PRICES[i["product_id"]] * i["quantity"] for i in body["items"]) for oid, body in paid.items()}
        assert {a.json()["id"]: a.json()["total_cents"] for _, a in answers if a.status_code == 201} == expected_total

        wait_until(lambda: len(receiver.accepted) >= len(paid), timeout=45, message="a webhook for every paid order")
        wait_until(lambda: all(client.get(f"/orders/{oid}").json()["status"] == "fulfilled" for oid in paid), timeout=15)

        # every confirmation email arrived at the SMTP server, once
        mail = [m for m in mailbox.read(stack_mailbox(stack)) if m["kind"] == "confirmation"]
        assert Counter(m["order_id"] for m in mail) == Counter(dict.fromkeys(paid, 1))
        assert all(f"Total: {dollars(expected_total[m['order_id']])}" in m["body"] for m in mail)

        # every invoice is a PDF on disk with the right total
        invoices = Path(stack.env["SHOP_DATA_DIR"]) / "invoices"
        for oid, total in expected_total.items():
            text = "".join(page.extract_text() for page in PdfReader(invoices / f"{oid}.pdf").pages)
            assert oid in text and f"Total: {dollars(total)}" in text

        # stock went down by exactly the ordered quantities
        ordered = Counter[str]()
        for body in paid.values():
            for item in body["items"]:
                ordered[item["product_id"]] += item["quantity"]
        stock = {p["id"]: p["stock"] for p in client.get("/products").json()}
        assert stock == {p: STOCK[p] - ordered[p] for p in STOCK}

        # each webhook arrived once, signed; the first two calls failed and were retried
        assert receiver.invalid == []
        assert Counter(e["data"]["order_id"] for e in receiver.accepted) == Counter(dict.fromkeys(paid, 1))
        assert all(e["type"] == "order.completed" and e["data"]["total_cents"] == expected_total[e["data"]["order_id"]]
                   for e in receiver.accepted)
        assert receiver.calls == len(paid) + 2

        # declined payments left no jobs; paid orders have exactly their graph
        for oid in declined:
            view = client.get(f"/orders/{oid}").json()
            assert view["status"] == "declined" and view["jobs"] == []
        app = Conveyor(database_url)
        try:
            assert app.admin.jobs.count() == len(paid) * JOBS_PER_ORDER
            assert app.admin.jobs.count(state="dead") == 0
            assert app.admin.jobs.count(type="send_followup_email", state="scheduled") == len(paid)
        finally:
            app.close()
    finally:
        client.close()
        receiver.shutdown()
        receiver.server_close()


def stack_mailbox(stack: Stack) -> Path:
    return Path(stack.env["SHOP_MAILBOX"])
