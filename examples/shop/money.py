"""Money as integer cents: parsed from decimal text, never a float, shown as dollars."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def cents(amount: str | Decimal | int) -> int:
    """``"89.99"`` → 8999; refuses fractions of a cent."""
    try:
        value = Decimal(str(amount)) * 100
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    if value != value.to_integral_value():
        raise ValueError(f"{amount!r} has fractions of a cent")
    return int(value)


def dollars(amount_cents: int) -> str:
    """8999 → ``"$89.99"``."""
    sign = "-" if amount_cents < 0 else ""
    whole, part = divmod(abs(amount_cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def decimal(amount_cents: int) -> str:
    """8999 → ``"89.99"``: the API's exact decimal text beside the cents."""
    return f"{Decimal(amount_cents) / 100:.2f}"
