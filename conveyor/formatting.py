"""How numbers, durations, ages and timestamps are written for people and for JSON, shared by the CLI and the web.

No web (or terminal) dependency here: the CLI must run on the base install, without the
``web`` extra, and still say "3m 05s ago" exactly as the dashboard does.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import date, datetime
from typing import Any


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4m 05s``, ``3h 20m``, ``5d 2h``; ``–`` for no value."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def ago(moment: datetime | None, now: datetime) -> str:
    """``4m 05s ago``, or ``in 2h 00m`` for a moment still to come."""
    if moment is None:
        return "–"
    delta = (now - moment).total_seconds()
    if delta < 0:
        return "in " + duration(-delta)
    return duration(delta) + " ago"


def number(value: float | None) -> str:
    """Thousands separated; fractions with one or two decimals."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
    return f"{int(value):,}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def json_value(value: Any) -> Any:
    """``json.dumps(default=json_value)``: timestamps as ISO-8601, records as objects, enums as values."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
