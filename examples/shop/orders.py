"""Checkout: an order request becomes a charged order whose jobs commit with it, or nothing at all."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from examples.shop.db import Order, OrderItem, Product, ShopDB
from examples.shop.payment import Charge, GatewayUnavailable, PaymentDeclined, PaymentGateway

if TYPE_CHECKING:
    from examples.shop.jobs import Pipeline


class ItemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


class OrderRequest(BaseModel):
    """The body of ``POST /orders``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=64)
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    items: list[ItemRequest] = Field(min_length=1, max_length=50)
    payment_token: str = Field(min_length=1, max_length=64)


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

    def place(self, request: OrderRequest) -> Order:
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
        return self.save(replace(order, charge_id=charge.id, workflow_id=order.id), charge, quantities)

    def save(self, order: Order, charge: Charge, quantities: Counter[str]) -> Order:
        """The order row, its items and its whole job graph: one commit."""
        try:
            with self.db.transaction() as tx:
                self.check_stock(self.db.products(tx, sorted(quantities), lock=True), quantities)
                self.db.insert_order(tx, order)
                self.pipeline.start(tx, order)
        except BaseException:
            self.gateway.refund(charge)
            raise
        return order

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
