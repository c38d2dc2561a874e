"""Checkout: an order request becomes a charged order whose jobs commit with it, or nothing at all.

What the client is told is what happened. A client may send an ``Idempotency-Key``: a retried
request with the same key gets the order the first one made (or its refusal), never a second
order and charge. When the connection breaks while the order's COMMIT is on its way, the
database may have committed it or not: the shop then looks the order up before it answers.
Found: the order stands and the answer is 201. Known to be absent: the charge is refunded and the
answer is 503 "nothing was saved". Still unknowable (the database stays unreachable): the answer
is 503 saying the outcome is unknown (retry with the same key to learn it), and the charge is
refunded later only once the order is known to be absent.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.errors import BackendError

from examples.shop.db import Order, OrderItem, Product, ShopDB
from examples.shop.payment import Charge, GatewayUnavailable, PaymentDeclined, PaymentGateway

if TYPE_CHECKING:
    from examples.shop.jobs import Pipeline


log = logging.getLogger("shop.orders")


def storable(value: str) -> str:
    """Refuse text no database here can store or no person means: control characters (NUL above all) and lone surrogates.

    PostgreSQL cannot store NUL in text at all; letting it through charged the card, failed the
    insert and answered a retryable 503 for a request that could never succeed.
    """
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"must not contain control characters or lone surrogates (U+{ord(char):04X} at position {position})")
    return value


class ItemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)

    _storable = field_validator("product_id")(storable)


class OrderRequest(BaseModel):
    """The body of ``POST /orders``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=64)
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    items: list[ItemRequest] = Field(min_length=1, max_length=50)
    payment_token: str = Field(min_length=1, max_length=64)

    _storable = field_validator("user_id", "email", "payment_token")(storable)

    def fingerprint(self) -> str:
        """Stands for the request, so a reused Idempotency-Key with a different order is caught."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class OrderRefused(Exception):
    """The order was not placed; ``status`` is the HTTP answer and ``detail`` says why."""

    status = 400

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.detail = {"error": message, **detail}


class UnknownProduct(OrderRefused):
    status = 409


class OutOfStock(OrderRefused):
    status = 409


class PaymentRefused(OrderRefused):
    status = 402


class PaymentUnavailable(OrderRefused):
    status = 503


class KeyReused(OrderRefused):
    """The Idempotency-Key was first used with a different request."""

    status = 422


class BadKey(OrderRefused):
    """The Idempotency-Key header is not a usable key."""

    status = 422


class OutcomeUnknown(OrderRefused):
    """The order's COMMIT was sent but not acknowledged, and the database cannot be asked yet."""

    status = 503


MAX_KEY_LENGTH = 255


def check_key(key: str | None) -> str | None:
    """The Idempotency-Key header: printable ASCII, at most 255 characters (None when not sent)."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " < c <= "~" for c in key):
        raise BadKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters without spaces")
    return key


def new_order_id() -> str:
    return "ord_" + secrets.token_hex(6)


class Checkout:
    """Places orders: checks stock, charges the card, then saves the order and its jobs in one transaction.

    The card is charged outside the transaction (a slow gateway must not hold the database);
    if the order cannot be saved afterwards, the charge is refunded.
    """

    def __init__(self, db: ShopDB, gateway: PaymentGateway, pipeline: Pipeline) -> None:
        self.db = db
        self.gateway = gateway
        self.pipeline = pipeline

    def place(self, request: OrderRequest, key: str | None = None) -> tuple[Order, bool]:
        """The placed order, and whether it was placed by an earlier request with the same ``key``."""
        fingerprint = request.fingerprint()
        if key is not None:
            earlier = self.db.order_by_key(key)
            if earlier is not None:
                return self.replay(earlier, fingerprint), True
        quantities = Counter[str]()
        for item in request.items:
            quantities[item.product_id] += item.quantity
        ids = sorted(quantities)
        products = self.db.products(ids=ids)
        self.check_stock(products, quantities)
        items = tuple(OrderItem(p, products[p].name, quantities[p], products[p].price_cents) for p in ids)
        order = Order(
            id=new_order_id(),
            user_id=request.user_id,
            email=request.email,
            status="paid",
            total_cents=sum(i.total_cents for i in items),
            charge_id=None,
            workflow_id=None,
            created_at=datetime.now(UTC),
            items=items,
            idempotency_key=key,
            request_hash=fingerprint if key is not None else None,
        )
        try:
            charge = self.gateway.charge(request.payment_token, order.total_cents, order.id)
        except PaymentDeclined as exc:
            declined = replace(order, status="declined")
            with self.db.transaction() as tx:
                self.db.insert_order(tx, declined)  # kept for the record; it has no jobs
            raise PaymentRefused(str(exc), order_id=order.id) from exc
        except GatewayUnavailable as exc:
            raise PaymentUnavailable(str(exc)) from exc
        try:
            return self.save(replace(order, charge_id=charge.id, workflow_id=order.id), charge, quantities), False
        except BackendError:
            raced = self.db.order_by_key(key) if key is not None else None
            if raced is None:
                raise
            return self.replay(raced, fingerprint), True  # a concurrent request with this key saved it first (ours was refunded)

    @staticmethod
    def replay(order: Order, fingerprint: str) -> Order:
        """What the first request with this key got: its order, or its refusal."""
        if order.request_hash != fingerprint:
            raise KeyReused("this Idempotency-Key was already used with a different request", order_id=order.id)
        if order.status == "declined":
            raise PaymentRefused("card declined", order_id=order.id)
        return order

    def save(self, order: Order, charge: Charge, quantities: Counter[str]) -> Order:
        """The order row, its items and its whole job graph: one commit; refunded only when surely not saved."""
        committing = False
        try:
            with self.db.transaction() as tx:
                self.check_stock(self.db.products(tx, sorted(quantities), lock=True), quantities)
                self.db.insert_order(tx, order)
                self.pipeline.start(tx, order)
                committing = True  # leaving the block sends COMMIT: past here a failure leaves the outcome open
        except BackendError as exc:  # unavailable, or a connection that broke in a way the driver calls otherwise
            if not committing:
                self.gateway.refund(charge)
                raise
            return self.settle(order, charge, sorted(quantities), exc)
        except BaseException:
            self.gateway.refund(charge)
            raise
        return order

    def settle(self, order: Order, charge: Charge, products: list[str], failure: BackendError, patience: float = 10.0) -> Order:
        """The COMMIT went out and no answer came back: ask the database whether the order is there."""
        saved = self.saved(order.id, products, patience)
        if saved is True:
            log.warning("order %s: COMMIT unacknowledged (%s) but the order is stored; answered as placed", order.id, failure)
            return order
        if saved is False:
            log.warning("order %s: COMMIT unacknowledged and the order is not stored; charge %s refunded", order.id, charge.id)
            self.gateway.refund(charge)
            raise failure
        log.error("order %s: COMMIT unacknowledged and the database still unreachable; the charge waits for the answer", order.id)
        threading.Thread(target=self.refund_if_absent, args=(order.id, products, charge), name=f"settle-{order.id}", daemon=True).start()
        raise OutcomeUnknown(
            "database unavailable",
            detail="the database stopped answering while the order was being saved: it may or may not be saved. Retry with "
                   "the same Idempotency-Key to learn which (a retry without one may place a second order); if it was not "
                   "saved, the charge is refunded.",
            outcome="unknown",
            order_id=order.id,
        )

    def saved(self, order_id: str, products: list[str], patience: float) -> bool | None:
        """Whether the order is stored: True, False, or None if the database did not tell within ``patience`` seconds."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.db.order_stored(order_id, products, wait=max(0.5, deadline - time.monotonic()))
            except BackendError:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.5)

    def refund_if_absent(self, order_id: str, products: list[str], charge: Charge, patience: float = 600.0) -> None:
        if self.saved(order_id, products, patience) is False:
            self.gateway.refund(charge)
            log.warning("order %s was not saved after all; charge %s refunded", order_id, charge.id)

    @staticmethod
    def check_stock(products: dict[str, Product], quantities: Counter[str]) -> None:
        missing = sorted(set(quantities) - set(products))
        if missing:
            raise UnknownProduct(f"unknown product {missing[0]!r}", product_ids=missing)
        short = [
            {"product_id": p, "requested": q, "available": max(0, products[p].available)}
            for p, q in sorted(quantities.items())
            if products[p].available < q
        ]
        if short:
            raise OutOfStock(f"not enough stock of {short[0]['product_id']!r}", items=short)
