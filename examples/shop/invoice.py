"""Invoice: the order's PDF (fpdf2), written whole or not at all, in fonts that cover any customer's name.

PDF's built-in fonts (Helvetica...) encode Latin-1 only, so a name like "李" made every attempt
fail and the order was never fulfilled. The text is set in DejaVu Sans (Latin, Greek, Cyrillic,
Hebrew, Arabic and symbols), with Droid Sans Fallback (Chinese, Japanese, Korean) for what it
lacks; both ship in ``fonts/`` with their licences (Bitstream Vera, Apache 2.0), copied from
Debian's fonts-dejavu-core and fonts-droid-fallback packages. A character neither covers is
drawn as an empty box, never an error.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from examples.shop.db import Order
from examples.shop.money import dollars

FONTS = Path(__file__).parent / "fonts"


@functools.cache
def dejavu_covers() -> frozenset[int]:
    """The code points DejaVu Sans has glyphs for (read once from its character map)."""
    with TTFont(FONTS / "DejaVuSans.ttf", lazy=True) as font:
        return frozenset(font.getBestCmap())


def new_pdf(text: str) -> FPDF:
    """A PDF with the fonts ``text`` needs: the CJK fallback (a large font, seconds to load) only when used.

    Only regular text (the customer and the items) can hold a customer's characters; headings are ours.
    """
    pdf = FPDF()
    pdf.add_font("DejaVu", "", FONTS / "DejaVuSans.ttf")
    pdf.add_font("DejaVu", "B", FONTS / "DejaVuSans-Bold.ttf")
    if any(ord(c) not in dejavu_covers() for c in text if c.isprintable()):
        pdf.add_font("DroidFallback", "", FONTS / "DroidSansFallbackFull.ttf")
        pdf.set_fallback_fonts(["DroidFallback"])
    return pdf


def render(order: Order, directory: Path) -> Path:
    """Write ``<directory>/<order id>.pdf`` through a temporary file, so a killed run leaves no half PDF."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{order.id}.pdf"
    temporary = directory / f".{order.id}.{os.getpid()}.pdf.tmp"
    pdf = new_pdf(order.user_id + order.email + "".join(i.name for i in order.items))
    pdf.set_title(f"Invoice {order.id}")
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 20)
    pdf.cell(0, 12, "Conveyor Shop – Invoice", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", size=11)
    for label, value in (("Order", order.id), ("Customer", f"{order.user_id} <{order.email}>"),
                         ("Date", order.created_at.strftime("%Y-%m-%d %H:%M UTC"))):
        pdf.cell(0, 7, f"{label}: {value}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    widths = (90, 20, 35, 35)
    pdf.set_font("DejaVu", "B", 11)
    for width, heading in zip(widths, ("Item", "Qty", "Unit price", "Amount"), strict=True):
        pdf.cell(width, 8, heading, border="B", align="L" if heading == "Item" else "R")
    pdf.ln()
    pdf.set_font("DejaVu", size=11)
    for item in order.items:
        cells = (item.name, str(item.quantity), dollars(item.unit_price_cents), dollars(item.total_cents))
        for width, text, align in zip(widths, cells, ("L", "R", "R", "R"), strict=True):
            pdf.cell(width, 8, text, align=align)
        pdf.ln()
    pdf.ln(4)
    pdf.set_font("DejaVu", "B", 13)
    pdf.cell(sum(widths), 10, f"Total: {dollars(order.total_cents)}", border="T", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.output(str(temporary))
    os.replace(temporary, path)
    return path
