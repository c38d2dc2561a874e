"""Invoice: the order's PDF (fpdf2), written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from examples.shop.db import Order
from examples.shop.money import dollars


def render(order: Order, directory: Path) -> Path:
    """Write ``<directory>/<order id>.pdf`` through a temporary file, so a killed run leaves no half PDF."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{order.id}.pdf"
    temporary = directory / f".{order.id}.{os.getpid()}.pdf.tmp"
    pdf = FPDF()
    pdf.set_title(f"Invoice {order.id}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(0, 12, "Conveyor Shop - Invoice", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=11)
    for label, value in (("Order", order.id), ("Customer", f"{order.user_id} <{order.email}>"),
                         ("Date", order.created_at.strftime("%Y-%m-%d %H:%M UTC"))):
        pdf.cell(0, 7, f"{label}: {value}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    widths = (90, 20, 35, 35)
    pdf.set_font("Helvetica", "B", 11)
    for width, heading in zip(widths, ("Item", "Qty", "Unit price", "Amount"), strict=True):
        pdf.cell(width, 8, heading, border="B", align="L" if heading == "Item" else "R")
    pdf.ln()
    pdf.set_font("Helvetica", size=11)
    for item in order.items:
        cells = (item.name, str(item.quantity), dollars(item.unit_price_cents), dollars(item.total_cents))
        for width, text, align in zip(widths, cells, ("L", "R", "R", "R"), strict=True):
            pdf.cell(width, 8, text, align=align)
        pdf.ln()
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(sum(widths), 10, f"Total: {dollars(order.total_cents)}", border="T", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.output(str(temporary))
    os.replace(temporary, path)
    return path
