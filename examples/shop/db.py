"""ShopDB: the shop's own tables, kept in the queue's database and written in the queue's transactions.

Everything that differs between SQLite and PostgreSQL in the shop's SQL is in this module:
placeholders, the timestamp type, and row locks (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers). Values always go in as bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor import Conveyor
from examples.shop.money import cents

SEED_PRODUCTS = (
    ("prod-1", "Mechanical Keyboard", "89.99", 50),
    ("prod-2", "USB-C Hub", "34.99", 100),
    ("prod-3", "Monitor Stand", "49.99", 25),
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS shop_products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    stock INTEGER NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS shop_users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    created_at {ts} NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES shop_users (id),
    email TEXT NOT NULL,
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    charge_id TEXT,
    workflow_id TEXT,
    created_at {ts} NOT NULL,
    invoice_path TEXT,
    invoiced_at {ts},
    fulfilled_at {ts}
);
CREATE INDEX IF NOT EXISTS shop_orders_created ON shop_orders (created_at);
CREATE TABLE IF NOT EXISTS shop_order_items (
    order_id TEXT NOT NULL REFERENCES shop_orders (id),
    product_id TEXT NOT NULL REFERENCES shop_products (id),
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX IF NOT EXISTS shop_order_items_product ON shop_order_items (product_id);
CREATE TABLE IF NOT EXISTS shop_inventory_applied (
    order_id TEXT PRIMARY KEY REFERENCES shop_orders (id),
    applied_at {ts} NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at {ts} NOT NULL
)
"""

# Columns added after the first release: (table, column, type). A database made by an older shop
# gets them at the next start; CREATE TABLE IF NOT EXISTS would leave its tables as they were.
ADDED_COLUMNS = (
    ("shop_orders", "idempotency_key", "TEXT"),  # the client's Idempotency-Key: a retried POST finds its order
    ("shop_orders", "request_hash", "TEXT"),  # the request that key was first used with
    ("shop_webhook_endpoints", "failures", "INTEGER NOT NULL DEFAULT 0"),  # failed attempts in a row
    ("shop_webhook_endpoints", "disabled_at", "{ts}"),  # set once the failures reach the limit
)
ADDED_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS shop_orders_idempotency ON shop_orders (idempotency_key)",
    "CREATE INDEX IF NOT EXISTS shop_webhook_endpoints_url ON shop_webhook_endpoints (url)",  # one row per URL: add_endpoint
)

MIGRATION_LOCK = 7_261_707  # pg_advisory_xact_lock key: concurrent starters create the tables once

AVAILABLE = """
SELECT p.id, p.name, p.price_cents, p.stock,
       p.stock - COALESCE((SELECT SUM(i.quantity) FROM shop_order_items i
                           JOIN shop_orders o ON o.id = i.order_id
                           WHERE i.product_id = p.id AND o.status <> 'declined'
                             AND NOT EXISTS (SELECT 1 FROM shop_inventory_applied a WHERE a.order_id = o.id)), 0)
FROM shop_products p
"""
"""Stock minus what paid orders whose inventory is not yet synced have reserved."""

ORDER_COLUMNS = (
    "id, user_id, email, status, total_cents, charge_id, workflow_id, created_at, invoice_path, invoiced_at, fulfilled_at, "
    "idempotency_key, request_hash"
)
ENDPOINT_COLUMNS = "id, url, secret, created_at, failures, disabled_at"


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    price_cents: int
    stock: int
    available: int  # stock not reserved by paid orders still waiting for their inventory sync


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: str
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    user_id: str
    email: str
    status: str  # declined, paid, fulfilled
    total_cents: int
    charge_id: str | None
    workflow_id: str | None
    created_at: datetime
    items: tuple[OrderItem, ...]
    invoice_path: str | None = None
    invoiced_at: datetime | None = None
    fulfilled_at: datetime | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    secret: str
    created_at: datetime
    failures: int = 0  # delivery attempts that failed in a row
    disabled_at: datetime | None = None  # no deliveries once set; registering the URL again enables it


class Tx:
    """One open transaction: runs the shop's SQL in the right dialect; ``connection`` joins enqueues to it."""

    def __init__(self, connection: Any, postgres: bool) -> None:
        self.connection = connection
        self.postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        text = sql.replace("?", "%s") if self.postgres else sql
        return self.connection.execute(text, tuple(self.value(p) for p in params))

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(sql, params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def value(self, param: Any) -> Any:
        """Timestamps: TIMESTAMPTZ on PostgreSQL, ISO-8601 UTC text (which sorts) on SQLite."""
        if isinstance(param, datetime) and not self.postgres:
            return param.astimezone(UTC).isoformat(timespec="microseconds")
        return param

    def when(self, stored: Any) -> datetime | None:
        if stored is None or isinstance(stored, datetime):
            return stored
        return datetime.fromisoformat(str(stored))

    def for_update(self) -> str:
        return " FOR UPDATE" if self.postgres else ""


class ShopDB:
    """The shop's reads and writes; each method is one transaction unless handed a ``Tx``."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        self.postgres = app.settings.database_url.startswith(("postgres://", "postgresql://"))

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.app.transaction() as connection:
            yield Tx(connection, self.postgres)

    # -- set-up -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create the tables (idempotent, safe from concurrent processes) and seed the products once."""
        ts = "TIMESTAMPTZ" if self.postgres else "TEXT"
        with self.transaction() as tx:
            if self.postgres:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            for statement in SCHEMA.format(ts=ts).split(";"):
                tx.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                self.add_column(tx, table, column, kind.format(ts=ts))
            for statement in ADDED_INDEXES:
                tx.execute(statement)
            for product_id, name, price, stock in SEED_PRODUCTS:
                tx.execute(
                    "INSERT INTO shop_products (id, name, price_cents, stock) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (product_id, name, cents(price), stock),
                )

    def add_column(self, tx: Tx, table: str, column: str, kind: str) -> None:
        if self.postgres:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        elif column not in {r[1] for r in tx.all(f"PRAGMA table_info({table})")}:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    # -- products -----------------------------------------------------------------------

    def products(self, tx: Tx | None = None, ids: Sequence[str] = (), lock: bool = False) -> dict[str, Product]:
        """Products by id (all when ``ids`` is empty); ``lock`` holds their rows until ``tx`` ends."""
        if tx is None:
            with self.transaction() as own:
                return self.products(own, ids)
        where = f" WHERE p.id IN ({', '.join('?' for _ in ids)})" if ids else ""
        if lock and ids:
            tx.all(f"SELECT id FROM shop_products WHERE id IN ({', '.join('?' for _ in ids)}) ORDER BY id{tx.for_update()}", ids)
        rows = tx.all(AVAILABLE + where + " ORDER BY p.id", ids)
        return {r[0]: Product(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows}

    # -- orders -------------------------------------------------------------------------

    def insert_order(self, tx: Tx, order: Order) -> None:
        tx.execute(
            "INSERT INTO shop_users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET email = excluded.email",
            (order.user_id, order.email, order.created_at),
        )
        tx.execute(
            "INSERT INTO shop_orders (id, user_id, email, status, total_cents, charge_id, workflow_id, created_at, idempotency_key, "
            "request_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order.id, order.user_id, order.email, order.status, order.total_cents, order.charge_id, order.workflow_id, order.created_at,
             order.idempotency_key, order.request_hash),
        )
        for item in order.items:
            tx.execute(
                "INSERT INTO shop_order_items (order_id, product_id, name, quantity, unit_price_cents) VALUES (?, ?, ?, ?, ?)",
                (order.id, item.product_id, item.name, item.quantity, item.unit_price_cents),
            )

    def order(self, order_id: str, tx: Tx | None = None, lock: bool = False) -> Order | None:
        """One order with its items; ``lock`` serialises the pipeline steps that finish it."""
        if tx is None:
            with self.transaction() as own:
                return self.order(order_id, own)
        row = tx.one(f"SELECT {ORDER_COLUMNS} FROM shop_orders WHERE id = ?{tx.for_update() if lock else ''}", (order_id,))
        if row is None:
            return None
        items = tx.all(
            "SELECT product_id, name, quantity, unit_price_cents FROM shop_order_items WHERE order_id = ? ORDER BY product_id",
            (order_id,),
        )
        return Order(
            id=row[0],
            user_id=row[1],
            email=row[2],
            status=row[3],
            total_cents=int(row[4]),
            charge_id=row[5],
            workflow_id=row[6],
            created_at=tx.when(row[7]) or datetime.now(UTC),
            items=tuple(OrderItem(i[0], i[1], int(i[2]), int(i[3])) for i in items),
            invoice_path=row[8],
            invoiced_at=tx.when(row[9]),
            fulfilled_at=tx.when(row[10]),
            idempotency_key=row[11],
            request_hash=row[12],
        )

    def order_stored(self, order_id: str, product_ids: Sequence[str], wait: float) -> bool:
        """Whether the order is stored, asked only once the transaction that saved it has ended either way.

        After a lost COMMIT acknowledgement the server may still be committing: a plain read could
        miss an order that is about to appear. The saving transaction held the order's product rows
        locked (``products(lock=True)``), so taking the same locks waits for it to end; ``wait``
        bounds that (PostgreSQL's lock_timeout; on SQLite writers are serialised already).
        """
        with self.transaction() as tx:
            if self.postgres:
                tx.execute(f"SET LOCAL lock_timeout = '{max(1, int(wait * 1000))}ms'")
            self.products(tx, sorted(product_ids), lock=True)
            return tx.one("SELECT 1 FROM shop_orders WHERE id = ?", (order_id,)) is not None

    def order_by_key(self, key: str) -> Order | None:
        """The order placed with this Idempotency-Key, if any."""
        with self.transaction() as tx:
            row = tx.one("SELECT id FROM shop_orders WHERE idempotency_key = ?", (key,))
            return None if row is None else self.order(row[0], tx)

    def orders(self, limit: int = 50) -> list[Order]:
        with self.transaction() as tx:
            ids = [r[0] for r in tx.all("SELECT id FROM shop_orders ORDER BY created_at DESC, id LIMIT ?", (limit,))]
            return [o for o in (self.order(i, tx) for i in ids) if o is not None]

    def record_invoice(self, tx: Tx, order_id: str, path: str, at: datetime) -> None:
        tx.execute("UPDATE shop_orders SET invoice_path = ?, invoiced_at = COALESCE(invoiced_at, ?) WHERE id = ?", (path, at, order_id))

    def apply_inventory(self, tx: Tx, order: Order, at: datetime) -> bool:
        """Take the order's quantities off stock unless already done: the mark and the decrement commit together."""
        inserted = tx.execute(
            "INSERT INTO shop_inventory_applied (order_id, applied_at) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING",
            (order.id, at),
        ).rowcount
        if inserted != 1:
            return False
        for item in sorted(order.items, key=lambda i: i.product_id):
            tx.execute("UPDATE shop_products SET stock = stock - ? WHERE id = ?", (item.quantity, item.product_id))
        return True

    def inventory_applied(self, tx: Tx, order_id: str) -> bool:
        return tx.one("SELECT 1 FROM shop_inventory_applied WHERE order_id = ?", (order_id,)) is not None

    def mark_fulfilled(self, tx: Tx, order_id: str, at: datetime) -> bool:
        """True for the one transaction that moves the order to fulfilled."""
        changed = tx.execute(
            "UPDATE shop_orders SET status = 'fulfilled', fulfilled_at = ? WHERE id = ? AND fulfilled_at IS NULL", (at, order_id)
        ).rowcount
        return bool(changed == 1)

    def sales(self, start: datetime, end: datetime) -> tuple[list[Order], list[tuple[str, str, int, int]]]:
        """Paid orders created in [start, end) and, per product, (id, name, quantity, revenue in cents)."""
        with self.transaction() as tx:
            ids = [
                r[0]
                for r in tx.all(
                    "SELECT id FROM shop_orders WHERE status <> 'declined' AND created_at >= ? AND created_at < ? ORDER BY created_at, id",
                    (start, end),
                )
            ]
            orders = [o for o in (self.order(i, tx) for i in ids) if o is not None]
            lines = tx.all(
                "SELECT i.product_id, i.name, SUM(i.quantity), SUM(i.quantity * i.unit_price_cents) FROM shop_order_items i "
                "JOIN shop_orders o ON o.id = i.order_id "
                "WHERE o.status <> 'declined' AND o.created_at >= ? AND o.created_at < ? GROUP BY i.product_id, i.name ORDER BY i.product_id",
                (start, end),
            )
        return orders, [(r[0], r[1], int(r[2]), int(r[3])) for r in lines]

    # -- webhook endpoints ----------------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint, limit: int) -> tuple[Endpoint, bool]:
        """Register ``endpoint.url``, or enable and return the endpoint that already has it; (endpoint, created).

        Raises ``TooManyEndpoints`` when ``limit`` endpoints exist already. The count and the
        insert share a transaction (on PostgreSQL under a lock), so concurrent calls cannot pass it.
        """
        with self.transaction() as tx:
            if self.postgres:
                tx.execute("LOCK TABLE shop_webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
            row = tx.one(f"SELECT {ENDPOINT_COLUMNS} FROM shop_webhook_endpoints WHERE url = ?", (endpoint.url,))
            if row is not None:
                tx.execute("UPDATE shop_webhook_endpoints SET failures = 0, disabled_at = NULL WHERE id = ?", (row[0],))
                return Endpoint(row[0], row[1], row[2], tx.when(row[3]) or datetime.now(UTC)), False
            count = tx.one("SELECT count(*) FROM shop_webhook_endpoints")
            if count is not None and int(count[0]) >= limit:
                raise TooManyEndpoints(limit)
            tx.execute(
                "INSERT INTO shop_webhook_endpoints (id, url, secret, created_at) VALUES (?, ?, ?, ?)",
                (endpoint.id, endpoint.url, endpoint.secret, endpoint.created_at),
            )
        return endpoint, True

    def remove_endpoint(self, endpoint_id: str) -> bool:
        with self.transaction() as tx:
            return bool(tx.execute("DELETE FROM shop_webhook_endpoints WHERE id = ?", (endpoint_id,)).rowcount == 1)

    def endpoints(self, tx: Tx | None = None, enabled_only: bool = False) -> list[Endpoint]:
        if tx is None:
            with self.transaction() as own:
                return self.endpoints(own, enabled_only)
        where = " WHERE disabled_at IS NULL" if enabled_only else ""
        rows = tx.all(f"SELECT {ENDPOINT_COLUMNS} FROM shop_webhook_endpoints{where} ORDER BY created_at, id")
        return [self._endpoint(tx, r) for r in rows]

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        with self.transaction() as tx:
            row = tx.one(f"SELECT {ENDPOINT_COLUMNS} FROM shop_webhook_endpoints WHERE id = ?", (endpoint_id,))
            return None if row is None else self._endpoint(tx, row)

    def endpoint_failed(self, endpoint_id: str, disable_after: int, at: datetime) -> Endpoint | None:
        """Count one failed delivery attempt; the endpoint is disabled when ``disable_after`` fail in a row."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE shop_webhook_endpoints SET failures = failures + 1, "
                "disabled_at = CASE WHEN failures + 1 >= ? THEN COALESCE(disabled_at, ?) ELSE disabled_at END WHERE id = ?",
                (disable_after, at, endpoint_id),
            )
            row = tx.one(f"SELECT {ENDPOINT_COLUMNS} FROM shop_webhook_endpoints WHERE id = ?", (endpoint_id,))
            return None if row is None else self._endpoint(tx, row)

    def endpoint_succeeded(self, endpoint_id: str) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE shop_webhook_endpoints SET failures = 0 WHERE id = ? AND failures <> 0", (endpoint_id,))

    @staticmethod
    def _endpoint(tx: Tx, row: tuple[Any, ...]) -> Endpoint:
        return Endpoint(row[0], row[1], row[2], tx.when(row[3]) or datetime.now(UTC), int(row[4] or 0), tx.when(row[5]))


class TooManyEndpoints(Exception):
    """The shop already has as many webhook endpoints as it allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} webhook endpoints may be registered; remove one first")
        self.limit = limit
