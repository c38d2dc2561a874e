"""Daily sales report: one day's paid orders and revenue, as CSV and as an HTML page."""

from __future__ import annotations

import csv
import html
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from examples.shop.db import ShopDB
from examples.shop.money import decimal, dollars


@dataclass(frozen=True, slots=True)
class Report:
    day: date
    orders: int
    revenue_cents: int
    csv_path: Path
    html_path: Path


def write(db: ShopDB, day: date, directory: Path) -> Report:
    """Write ``sales-<day>.csv`` and ``sales-<day>.html`` for the UTC day ``day``."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    orders, products = db.sales(start, start + timedelta(days=1))
    revenue = sum(o.total_cents for o in orders)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / f"sales-{day.isoformat()}.csv"
    html_path = directory / f"sales-{day.isoformat()}.html"

    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as out:
        rows = csv.writer(out)
        rows.writerow(["order_id", "created_at", "user_id", "items", "total_cents", "total"])
        for o in orders:
            rows.writerow([o.id, o.created_at.isoformat(), o.user_id, sum(i.quantity for i in o.items), o.total_cents, decimal(o.total_cents)])
        rows.writerow(["TOTAL", day.isoformat(), "", sum(q for _, _, q, _ in products), revenue, decimal(revenue)])
    os.replace(tmp, csv_path)

    product_rows = "".join(
        f"<tr><td>{html.escape(pid)}</td><td>{html.escape(name)}</td><td class=n>{qty}</td><td class=n>{dollars(amount)}</td></tr>"
        for pid, name, qty, amount in products
    )
    order_rows = "".join(
        f"<tr><td>{html.escape(o.id)}</td><td>{o.created_at:%H:%M:%S}</td><td>{html.escape(o.user_id)}</td>"
        f"<td class=n>{dollars(o.total_cents)}</td></tr>"
        for o in orders
    )
    page = f"""<!doctype html>
<html lang=en><meta charset=utf-8><title>Sales {day.isoformat()}</title>
<style>body{{font:15px system-ui;margin:2rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}}.n{{text-align:right}}</style>
<h1>Sales on {day.isoformat()} (UTC)</h1>
<p><strong>{len(orders)}</strong> orders, revenue <strong>{dollars(revenue)}</strong></p>
<h2>By product</h2><table><tr><th>Product</th><th>Name</th><th class=n>Quantity</th><th class=n>Revenue</th></tr>{product_rows}</table>
<h2>Orders</h2><table><tr><th>Order</th><th>Time</th><th>User</th><th class=n>Total</th></tr>{order_rows}</table>
</html>
"""
    tmp = html_path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, html_path)
    return Report(day, len(orders), revenue, csv_path, html_path)
