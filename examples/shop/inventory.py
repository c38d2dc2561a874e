"""Inventory sync: an order's quantities come off stock exactly once, however often the job runs.

The idempotency mark (a row in ``shop_inventory_applied``) and the decrement commit in one
transaction: a run killed mid-way leaves neither, a run repeated after the commit finds the
mark and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from examples.shop.db import Order, ShopDB, Tx


@dataclass(frozen=True, slots=True)
class InventorySync:
    order_id: str
    applied: bool  # False: an earlier run already took this order's stock


def sync(db: ShopDB, tx: Tx, order: Order) -> InventorySync:
    """Apply the order's decrement inside ``tx`` (the caller holds the order's row lock)."""
    return InventorySync(order.id, db.apply_inventory(tx, order, datetime.now(UTC)))
