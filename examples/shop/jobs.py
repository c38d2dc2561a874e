"""The order pipeline: the shop's job types, their payloads, and the graph an order starts.

Run the workers with ``conveyor worker examples.shop.jobs:app --processes 2``; ``app`` is
built from the environment (see ShopConfig) on first access, not at import.

The graph of one order, enqueued in the order's own transaction, all in its workflow::

    send_order_confirmation (HIGH) ─┬─► generate_invoice ─┬─► deliver_webhook order.completed (one per endpoint)
                                    └─► sync_inventory  ──┘
    send_followup_email (24 h later)

Invoice and inventory wait (``depends_on``) for the confirmation; each webhook delivery waits
for both. Whichever of invoice and inventory finishes second marks the order fulfilled.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from conveyor import Cancel, Conveyor, Exponential, JobContext, JobEvent, JobState, Priority, Selection
from conveyor.webhooks import WebhookDeliveryError, WebhookURLRefused, deliver
from examples.shop import inventory, invoice, mail, report
from examples.shop.config import ShopConfig
from examples.shop.db import Order, ShopDB, Tx
from examples.shop.faults import Faults
from examples.shop.money import decimal

log = logging.getLogger("shop.jobs")

ORDER_COMPLETED = "order.completed"


class OrderRef(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)


class WebhookEvent(BaseModel):
    """One message to one endpoint; ``event_id`` is its ``webhook-id`` on every retry."""

    endpoint_id: str
    event_id: str
    event_type: str
    order_id: str


class ReportDay(BaseModel):
    day: date | None = None  # default: yesterday (UTC), the day that just ended at midnight


class Cleanup(BaseModel):
    older_than_seconds: float | None = Field(default=None, gt=0)


class Pipeline:
    """The handlers of one shop, bound to its database, mailer and failure injection."""

    def __init__(self, app: Conveyor, config: ShopConfig) -> None:
        self.app = app
        self.config = config
        self.db = ShopDB(app)
        self.mailer = mail.Mailer(config.smtp_host, config.smtp_port, config.mail_from)
        self.faults = Faults({"email": config.email_failure_rate, "pdf": config.pdf_failure_rate})

    def start(self, tx: Tx, order: Order) -> list[int]:
        """Enqueue the order's whole job graph inside the order's own transaction."""
        c, w = tx.connection, {"workflow_id": order.workflow_id or order.id}
        ref = {"order_id": order.id}
        confirm = self.app.enqueue("send_order_confirmation", ref, connection=c, priority=Priority.HIGH, **w)
        invoice = self.app.enqueue("generate_invoice", ref, connection=c, depends_on=[confirm], **w)
        stock = self.app.enqueue("sync_inventory", ref, connection=c, depends_on=[confirm], **w)
        hooks = [
            self.app.enqueue(
                "deliver_webhook",
                {"endpoint_id": e.id, "event_id": "msg_" + secrets.token_hex(12), "event_type": ORDER_COMPLETED, "order_id": order.id},
                connection=c, depends_on=[invoice, stock], idempotency_key=f"{ORDER_COMPLETED}:{order.id}:{e.id}", **w,
            )
            for e in self.db.endpoints(tx, enabled_only=True)
        ]
        followup = self.app.enqueue("send_followup_email", ref, connection=c, delay=self.config.followup_delay, **w)
        return [confirm, invoice, stock, *hooks, followup]

    def order(self, order_id: str) -> Order:
        order = self.db.order(order_id)
        if order is None:
            raise LookupError(f"order {order_id} does not exist")
        return order

    # -- handlers ---------------------------------------------------------------------

    def send_order_confirmation(self, p: OrderRef, ctx: JobContext) -> dict[str, Any]:
        order = self.order(p.order_id)
        message_id = ctx.once("smtp", self._send, "email", mail.confirmation(order), ctx.attempt)
        return {"message_id": message_id, "to": order.email}

    def send_followup_email(self, p: OrderRef, ctx: JobContext) -> dict[str, Any]:
        order = self.order(p.order_id)
        return {"message_id": ctx.once("smtp", self._send, "email", mail.followup(order), ctx.attempt)}

    def _send(self, kind: str, message: Any, attempt: int) -> str:
        self.faults.check(kind, attempt, f"SMTP refused {message['Subject']!r}")
        return self.mailer.send(message)

    def generate_invoice(self, p: OrderRef, ctx: JobContext) -> dict[str, Any]:
        order = self.order(p.order_id)
        self.faults.check("pdf", ctx.attempt, f"PDF renderer crashed on {order.id}")
        path = invoice.render(order, self.config.invoice_dir)
        with self.db.transaction() as tx:
            self.db.order(order.id, tx, lock=True)
            self.db.record_invoice(tx, order.id, str(path), datetime.now(UTC))
            self._fulfil_if_done(tx, order)
        return {"path": str(path), "total_cents": order.total_cents}

    def sync_inventory(self, p: OrderRef, ctx: JobContext) -> dict[str, Any]:
        with self.db.transaction() as tx:
            order = self.db.order(p.order_id, tx, lock=True)
            if order is None:
                raise LookupError(f"order {p.order_id} does not exist")
            done = inventory.sync(self.db, tx, order)
            self._fulfil_if_done(tx, order)
        return {"applied": done.applied, "items": {i.product_id: i.quantity for i in order.items}}

    def _fulfil_if_done(self, tx: Tx, order: Order) -> None:
        """Called under the order's row lock by invoice and inventory: the second one fulfils it."""
        current = self.db.order(order.id, tx)
        if current is not None and current.invoiced_at is not None and self.db.inventory_applied(tx, order.id):
            self.db.mark_fulfilled(tx, order.id, datetime.now(UTC))

    def deliver_webhook(self, p: WebhookEvent, ctx: JobContext) -> dict[str, Any] | Cancel:
        endpoint = self.db.endpoint(p.endpoint_id)
        if endpoint is None:
            return Cancel(f"webhook endpoint {p.endpoint_id} was removed")
        order = self.order(p.order_id)
        body = {
            "type": p.event_type,
            "timestamp": (order.fulfilled_at or datetime.now(UTC)).isoformat(),
            "data": {
                "order_id": order.id,
                "user_id": order.user_id,
                "total_cents": order.total_cents,
                "total": decimal(order.total_cents),
                "currency": "USD",
                "items": [{"product_id": i.product_id, "quantity": i.quantity} for i in order.items],
            },
        }
        if endpoint.disabled_at is not None:
            return Cancel(f"webhook endpoint {endpoint.id} is disabled after {endpoint.failures} failed attempts in a row")
        try:
            sent = deliver(endpoint.url, endpoint.secret, body, msg_id=p.event_id, timeout=self.config.webhook_timeout,
                           allow_private=self.config.webhook_allow_private)
        except WebhookURLRefused as exc:
            return Cancel(str(exc))  # retrying cannot help
        except WebhookDeliveryError:
            now = self.db.endpoint_failed(endpoint.id, self.config.webhook_disable_after, datetime.now(UTC))
            if now is not None and now.disabled_at is not None:
                log.warning("webhook endpoint %s (%s) disabled after %d failed attempts in a row", now.id, now.url, now.failures)
                return Cancel(f"webhook endpoint {endpoint.id} disabled after {now.failures} failed attempts in a row")
            raise
        self.db.endpoint_succeeded(endpoint.id)
        return {"status_code": sent.status_code, "url": endpoint.url, "ms": round(sent.duration * 1000, 1)}

    def daily_sales_report(self, p: ReportDay) -> dict[str, Any]:
        day = p.day or (datetime.now(UTC).date() - timedelta(days=1))
        written = report.write(self.db, day, self.config.report_dir)
        return {"day": day.isoformat(), "orders": written.orders, "revenue_cents": written.revenue_cents,
                "csv": str(written.csv_path), "html": str(written.html_path)}

    def cleanup_finished_jobs(self, p: Cleanup) -> dict[str, int]:
        age = p.older_than_seconds or self.config.cleanup_after
        before = self.app.now() - timedelta(seconds=age)
        return {"purged": self.app.admin.jobs.purge(Selection.matching(state=[JobState.COMPLETED, JobState.CANCELLED], created_before=before), actor="shop")}


@dataclass(frozen=True, slots=True)
class Shop:
    """One shop: its settings, its Conveyor app (with the job types declared) and its pipeline."""

    config: ShopConfig
    app: Conveyor
    pipeline: Pipeline

    @property
    def db(self) -> ShopDB:
        return self.pipeline.db


def create_shop(config: ShopConfig) -> Shop:
    """Declare the shop's job types on a new Conveyor app."""
    app = Conveyor(config.database_url)
    pipeline = Pipeline(app, config)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per webhook POST is the worker's job line
    backoff = Exponential(base=config.retry_base, cap=600)
    app.job(queue="email", priority=Priority.HIGH, max_attempts=6, backoff=backoff, timeout=30)(pipeline.send_order_confirmation)
    app.job(queue="email", max_attempts=6, backoff=backoff, timeout=30)(pipeline.send_followup_email)
    app.job(queue="documents", max_attempts=5, backoff=backoff, timeout=60)(pipeline.generate_invoice)
    app.job(queue="inventory", max_attempts=10, backoff=backoff, timeout=30)(pipeline.sync_inventory)
    app.job(queue="webhooks", max_attempts=config.webhook_attempts, backoff=backoff, timeout=config.webhook_timeout + 5)(
        pipeline.deliver_webhook
    )
    app.job(queue="documents", priority=Priority.LOW, max_attempts=3, backoff=backoff, timeout=300)(pipeline.daily_sales_report)
    app.job(priority=Priority.LOW, max_attempts=3, backoff=backoff, timeout=300)(pipeline.cleanup_finished_jobs)

    app.cron("0 0 * * *", "daily_sales_report", {}, name="daily-sales-report")  # UTC midnight: yesterday's sales
    app.cron("0 3 * * *", "cleanup_finished_jobs", {}, name="cleanup-finished-jobs")

    @app.on("dead")
    def alert(event: JobEvent) -> None:
        log.error("ALERT: job %s %s is dead after %d attempts: %s", event.job.id, event.job.type, event.attempt, event.error)

    return Shop(config, app, pipeline)


_app: Conveyor | None = None


def __getattr__(name: str) -> Any:
    """``examples.shop.jobs:app``, built from the environment when first asked for."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_shop(ShopConfig.from_env()).app
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
